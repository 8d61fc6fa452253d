"""Tiny models of the published configs for the export tests, and comparisons of what the
exported files compute with what PyTorch computes."""
import numpy as np
import torch
from helpers.configs import published_config, tiny_cfg

# the export tests' image size (H, W): small, and not a multiple of the size divisibility (32)
SIZE = (64, 96)
THRESHOLDS = ("MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0")


def export_cfg(dataset: str, task: str, *opts):
    """The tiny model of a published config on CPU with random weights; every query may become a
    panoptic segment (thresholds 0: an untrained model's are all below the published ones), so
    the post-processing comparisons are not vacuous."""
    return tiny_cfg(published_config(dataset, task), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *THRESHOLDS, *opts)


def build(cfg):
    """(MaskFormer, ExportableMaskFormer) of cfg, seeded."""
    from mask2former_dinat.export.exportable_model import build_exportable

    torch.manual_seed(0)
    return build_exportable(cfg)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3] RGB noise with some structure (a bright square), so masks differ across pixels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[height // 4: height // 2, width // 4: width // 2] = 250
    return image


def torch_raw(wrapper, rgb: np.ndarray):
    """(pred_logits [Q, C+1], pred_masks [Q, h, w]) of PyTorch, as numpy."""
    with torch.no_grad():
        logits, masks = wrapper(torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32)))
    return logits[0].numpy(), masks[0].numpy()


def torch_results(model, cfg, rgb: np.ndarray) -> dict:
    """MaskFormer's own inference on one RGB image (in the config's INPUT.FORMAT)."""
    image = rgb if cfg.INPUT.FORMAT == "RGB" else rgb[:, :, ::-1]
    with torch.no_grad():
        return model([{"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}])[0]


def assert_same_results(got: dict, want: dict, min_agreement: float = 0.999) -> None:
    """NumPy results (numpy_postprocess) against MaskFormer's: the same keys; semantic argmax,
    panoptic ids and instance masks equal on >= min_agreement of the pixels; the same segments
    and the same instances (classes, scores to 1e-5) in score order."""
    assert set(got) == set(want)
    if "sem_seg" in want:
        agree = (got["sem_seg"].argmax(0) == want["sem_seg"].argmax(0).numpy()).mean()
        assert agree >= min_agreement, agree
    if "panoptic_seg" in want:
        seg, info = got["panoptic_seg"]
        want_seg, want_info = want["panoptic_seg"]
        assert len(want_info) > 0
        assert info == want_info
        assert (seg == want_seg.numpy()).mean() >= min_agreement
    if "instances" in want:
        inst = want["instances"]
        order = torch.argsort(inst.scores, descending=True)
        assert len(inst) > 0
        np.testing.assert_array_equal(got["instances"]["pred_classes"], inst.pred_classes[order].numpy())
        np.testing.assert_allclose(got["instances"]["scores"], inst.scores[order].numpy(), atol=1e-5)
        masks = got["instances"]["pred_masks"] == inst.pred_masks[order].numpy()
        assert masks.mean() >= min_agreement


def export_tiny(cfg, path, fmt: str, size=SIZE, dynamic_range=None):
    """Build the tiny model of cfg and export it to `path` ("onnx" or "torch-export") through the
    package's API (what tools/export_model.py calls); returns (model, wrapper)."""
    from mask2former_dinat.export import metadata
    from mask2former_dinat.export.onnx_export import export_onnx
    from mask2former_dinat.export.torch_export import export_program, save_program

    model, wrapper = build(cfg)
    meta = metadata.model_metadata(cfg, model, None if dynamic_range else size, dynamic_range)
    program = export_program(wrapper, size, dynamic_range)
    (export_onnx if fmt == "onnx" else save_program)(program, str(path), meta)
    return model, wrapper
