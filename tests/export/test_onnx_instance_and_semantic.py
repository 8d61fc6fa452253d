"""ONNX export of the tiny models of the published COCO instance and ADE20K semantic configs:
onnxruntime against PyTorch, NumPy post-processing against MaskFormer's. (The panoptic config,
which also exercises the tool, the demo and the copied-out runner, is test_onnx_panoptic.py.)"""
import numpy as np
import pytest
from helpers.exported_models import SIZE, assert_same_results, export_cfg, export_tiny, random_rgb, torch_raw, torch_results

from mask2former_dinat.export.onnx_runtime import OnnxMaskFormer

# measured: at most 1.5e-6 over the three tiny models
TOLERANCE = 1e-5

CASES = {"instance": ("coco", {"instances"}), "semantic": ("ade20k", {"sem_seg"})}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    dataset, outputs = CASES[request.param]
    cfg = export_cfg(dataset, request.param)
    path = tmp_path_factory.mktemp(f"onnx_{request.param}") / "model.onnx"
    model, wrapper = export_tiny(cfg, path, "onnx")
    return model, wrapper, cfg, OnnxMaskFormer(str(path)), outputs


def test_onnxruntime_outputs_match_pytorch(exported):
    _, wrapper, _, runner, _ = exported
    rgb = random_rgb(*SIZE, seed=3)
    logits, masks, _ = runner.raw(rgb)
    want_logits, want_masks = torch_raw(wrapper, rgb)
    assert logits.shape == want_logits.shape and masks.shape == want_masks.shape
    assert np.abs(logits - want_logits).max() < TOLERANCE
    assert np.abs(masks - want_masks).max() < TOLERANCE


def test_numpy_postprocessing_gives_maskformers_results(exported):
    model, _, cfg, runner, outputs = exported
    rgb = random_rgb(*SIZE, seed=4)
    got = runner.predict(rgb)
    assert set(got) == outputs
    assert_same_results(got, torch_results(model, cfg, rgb))
