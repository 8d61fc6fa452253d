"""What a deployment needs to know about an exported model, stored inside the exported file.

One JSON document (key METADATA_KEY: ONNX metadata_props, or an extra file of a torch.export
archive) with the input contract (static size or dynamic, size divisibility, the padding value
in RGB 0-255) and the inference settings of the config (thresholds, top-k, thing classes,
which results to compute), so onnx_runtime.py can post-process without the config.
"""
import json
from typing import Dict, Optional, Sequence

__all__ = ["METADATA_KEY", "model_metadata", "check_input_size", "dumps", "loads"]

METADATA_KEY = "mask2former_dinat"


def model_metadata(cfg, model, size: Optional[Sequence[int]], dynamic_range: Optional[Sequence[int]] = None) -> Dict:
    """The metadata of `model` (a MaskFormer built from `cfg`) exported at `size` (H, W), or
    dynamic (size None) for heights/widths in `dynamic_range` (min, max) pixels."""
    mean = [float(v) for v in model.pixel_mean.flatten().tolist()]
    if cfg.INPUT.FORMAT == "BGR":
        mean = mean[::-1]
    try:
        thing_ids = model.thing_ids() if (model.panoptic_on or model.instance_on) else None
    except ValueError:
        thing_ids = None
    return {
        "format_version": 1,
        "input": "image: float32 [1, 3, H, W], RGB in 0-255",
        "outputs": ["pred_logits [1, Q, C+1]", "pred_masks [1, Q, H_pad/4, W_pad/4]"],
        "size": None if size is None else [int(size[0]), int(size[1])],
        "dynamic_range": None if dynamic_range is None else [int(v) for v in dynamic_range],
        "size_divisibility": int(model.size_divisibility),
        "pad_value_rgb": mean,
        "num_classes": int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
        "object_mask_threshold": float(model.object_mask_threshold),
        "overlap_threshold": float(model.overlap_threshold),
        "test_topk_per_image": int(model.test_topk_per_image),
        "semantic_on": bool(model.semantic_on),
        "panoptic_on": bool(model.panoptic_on),
        "instance_on": bool(model.instance_on),
        "thing_ids": thing_ids,
        "datasets_test": list(cfg.DATASETS.TEST),
    }


def check_input_size(meta: Dict, height: int, width: int, where: str) -> None:
    """ValueError unless an image of height x width is one the exported file `where` serves."""
    if meta.get("size") is not None:
        if [height, width] != list(meta["size"]):
            h, w = meta["size"]
            raise ValueError(
                f"{where} was exported for {h}x{w} images only (a static export); this image is {height}x{width}. "
                f"Resize the image to {h}x{w}, or export again with `tools/export_model.py --dynamic` "
                f"(or `--size {height} {width}`)."
            )
        return
    low, high = meta["dynamic_range"]
    if not (low <= height <= high and low <= width <= high):
        raise ValueError(
            f"{where} was exported for heights and widths from {low} to {high} pixels; this image is "
            f"{height}x{width}. Resize it into that range."
        )


def dumps(meta: Dict) -> str:
    return json.dumps(meta, sort_keys=True)


def loads(text: str, where: str) -> Dict:
    try:
        meta = json.loads(text)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: its {METADATA_KEY!r} metadata is not JSON ({e}); export it again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != 1:
        raise ValueError(f"{where}: unknown {METADATA_KEY!r} metadata version; export it again with this release")
    return meta
