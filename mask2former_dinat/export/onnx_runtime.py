"""Run an exported ONNX model with onnxruntime and NumPy only, and post-process its outputs.

`OnnxMaskFormer(path)` reads the model and its metadata (metadata.py); `raw(image)` returns
(pred_logits [Q, C+1], pred_masks [Q, H_pad/4, W_pad/4]) of one image, `predict(image)` the
results MaskFormer would return, as NumPy: {"sem_seg": [K, H, W]}, {"panoptic_seg":
(int32 [H, W], segments_info)}, {"instances": {...}} (numpy_postprocess.py). `image` is uint8
or float [H, W, 3] RGB. A static model refuses other sizes with ValueError; a dynamic one
pads them to its size divisibility. Imports no PyTorch: this file, numpy_postprocess.py,
metadata.py and modeling/panoptic_segments.py can be copied into a deployment as they are.
"""
from typing import Dict, Tuple

import numpy as np

try:
    from . import metadata as metadata_lib
    from . import numpy_postprocess as post
except ImportError:  # copied beside its two siblings, outside the package
    import metadata as metadata_lib
    import numpy_postprocess as post

__all__ = ["OnnxMaskFormer", "pad_to_divisibility"]


class OnnxMaskFormer:
    """An exported model in onnxruntime (CPU unless `providers` says otherwise)."""

    def __init__(self, path: str, providers=("CPUExecutionProvider",), threads: int = 0):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("running an ONNX model needs onnxruntime: pip install -e '.[export]'") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"onnxruntime cannot load {path} ({e}); export it with tools/export_model.py") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if metadata_lib.METADATA_KEY not in props:
            raise ValueError(f"{path} has no {metadata_lib.METADATA_KEY!r} metadata: export it with tools/export_model.py")
        self.meta = metadata_lib.loads(props[metadata_lib.METADATA_KEY], path)
        self.path = path

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """[H, W, 3] RGB -> the graph input float32 [1, 3, H', W'] (padded if the model is dynamic)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        metadata_lib.check_input_size(self.meta, image.shape[0], image.shape[1], self.path)
        x = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        if self.meta["size"] is None:
            x = pad_to_divisibility(x, self.meta)
        return x

    def raw(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
        """(pred_logits [Q, C+1], pred_masks [Q, H_pad/4, W_pad/4], (H_pad, W_pad)) of one RGB image."""
        x = self.prepare(image)
        logits, masks = self.session.run(None, {"image": x})
        div = max(1, self.meta["size_divisibility"])
        padded = tuple(-(-n // div) * div for n in x.shape[-2:])
        return logits[0], masks[0], padded

    def predict(self, image: np.ndarray) -> Dict:
        """The results MaskFormer returns for `image` (RGB [H, W, 3]), as NumPy (see module doc)."""
        return self.predict_from_raw(*self.raw(image), image.shape[:2])

    def predict_from_raw(self, logits: np.ndarray, masks: np.ndarray, padded, image_size) -> Dict:
        """predict()'s results from raw()'s outputs for an image of image_size (H, W)."""
        mask_pred = post.masks_to_image(masks, padded, image_size)
        meta, result = self.meta, {}
        if meta["semantic_on"]:
            result["sem_seg"] = post.semantic_inference(logits, mask_pred)
        if meta["panoptic_on"] and meta["thing_ids"] is None:  # instance results of a non-panoptic model keep all classes
            raise ValueError(f"{self.path} has no thing classes in its metadata (DATASETS.TEST had none at export); "
                             "export it again with the dataset registered, or turn off PANOPTIC_ON")
        if meta["panoptic_on"]:
            result["panoptic_seg"] = post.panoptic_inference(
                logits, mask_pred, object_mask_threshold=meta["object_mask_threshold"],
                overlap_threshold=meta["overlap_threshold"], thing_ids=meta["thing_ids"])
        if meta["instance_on"]:
            result["instances"] = post.instance_inference(
                logits, mask_pred, topk=meta["test_topk_per_image"],
                thing_ids=meta["thing_ids"] if meta["panoptic_on"] else None)
        return result


def pad_to_divisibility(x: np.ndarray, meta: Dict) -> np.ndarray:
    """float32 [1, 3, H, W] RGB, padded on the bottom/right to the next multiple of the size
    divisibility with the pixel mean (normalised to 0 inside the graph, as MaskFormer pads)."""
    div = max(1, meta["size_divisibility"])
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % div, -width % div
    if not (pad_h or pad_w):
        return x
    out = np.empty((1, 3, height + pad_h, width + pad_w), dtype=np.float32)
    out[...] = np.asarray(meta["pad_value_rgb"], dtype=np.float32).reshape(1, 3, 1, 1)
    out[:, :, :height, :width] = x
    return out
