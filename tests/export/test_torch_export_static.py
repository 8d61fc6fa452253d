"""torch.export at one size: the saved program reloads and matches PyTorch; another size is
refused with a clear error; a file that is not a program is refused clearly too."""
import numpy as np
import pytest
import torch
from helpers.exported_models import SIZE, export_cfg, export_tiny, random_rgb, torch_raw

from mask2former_dinat.export.torch_export import load_program

# measured: at most 1.5e-6 (the export backend's summation order)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch_export") / "model.pt2"
    _, wrapper = export_tiny(export_cfg("coco", "panoptic"), path, "torch-export")
    return wrapper, path


def _image(rgb):
    return torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32))


def test_reloaded_program_matches_pytorch(exported):
    wrapper, path = exported
    run, meta = load_program(str(path))
    rgb = random_rgb(*SIZE, seed=5)
    logits, masks = run(_image(rgb))
    want_logits, want_masks = torch_raw(wrapper, rgb)
    assert meta["size"] == list(SIZE)
    assert np.abs(logits[0].numpy() - want_logits).max() < TOLERANCE
    assert np.abs(masks[0].numpy() - want_masks).max() < TOLERANCE


def test_static_program_refuses_another_size_saying_what_to_do(exported):
    run, _ = load_program(str(exported[1]))
    with pytest.raises(ValueError, match=r"model.pt2 was exported for 64x96 images only \(a static export\); "
                                         r"this image is 64x128\. .*--dynamic"):
        run(_image(random_rgb(64, 128)))


def test_a_file_that_is_not_a_program_is_refused_clearly(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"cannot load .*model.pt2 as a torch.export program .*--format torch-export"):
        load_program(str(path))
