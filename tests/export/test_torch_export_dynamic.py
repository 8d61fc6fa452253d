"""A dynamic torch.export serves sizes it was not traced at: multiples of the size divisibility
directly, others padded by the runner like MaskFormer pads. Traced at 64x96, where the tiny
model's last stage (2x3) is smaller than its kernel (3) and natten-0.14 padding applies; served
at 128x160 (no padding there) and 70x100 (padded to 96x128)."""
import numpy as np
import pytest
import torch
from helpers.exported_models import SIZE, export_cfg, export_tiny, random_rgb, torch_raw

from mask2former_dinat.export.torch_export import load_program

TOLERANCE = 1e-5  # measured: at most 1.4e-6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch_export_dynamic") / "model.pt2"
    _, wrapper = export_tiny(export_cfg("coco", "panoptic"), path, "torch-export", dynamic_range=(64, 512))
    return wrapper, load_program(str(path))


@pytest.mark.parametrize("height,width", [SIZE, (128, 160), (70, 100)])
def test_dynamic_program_serves_other_sizes_with_pytorchs_outputs(exported, height, width):
    wrapper, (run, meta) = exported
    rgb = random_rgb(height, width, seed=height)
    logits, masks = run(torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32)))
    want_logits, want_masks = torch_raw(wrapper, rgb)
    assert meta["size"] is None and masks.shape[-2:] == want_masks.shape[-2:]
    assert np.abs(logits[0].numpy() - want_logits).max() < TOLERANCE
    assert np.abs(masks[0].numpy() - want_masks).max() < TOLERANCE


def test_dynamic_program_refuses_sizes_outside_its_range(exported):
    run, _ = exported[1]
    with pytest.raises(ValueError, match=r"exported for heights and widths from 64 to 512 pixels; this image is 32x600"):
        run(torch.zeros(1, 3, 32, 600))
