"""tools/convert-pretrained-dinat-model-to-d2.py: an ImageNet DiNAT checkpoint, in every layout it comes
in, becomes a .pkl that detectron2's DetectionCheckpointer loads into D2DiNAT, alone or as a full model's
`backbone`; a kernel size that does not fit is refused, or resized with --interpolate-rpb."""
import argparse
import importlib.util
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from helpers import imagenet_checkpoints as imagenet
from helpers.configs import COCO_PANOPTIC, PUBLISHED_CONFIGS, meta_model
from helpers.http_server import FileServer, Route
from torch import nn

from mask2former_dinat.checkpoint import Mask2FormerCheckpointer
from mask2former_dinat.imagenet_pretraining import KernelSizeMismatchError, convert
from mask2former_dinat.modeling.backbone.d2_dinat import D2DiNAT

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert-pretrained-dinat-model-to-d2.py"
ARCH = dict(embed_dim=16, depths=[1, 2, 1, 1], num_heads=[1, 2, 4, 8], kernel_size=3,
            dilations=[[2], [1, 2], [1], [1]], mlp_ratio=2.0, layer_scale=1e-5,
            out_features=["res2", "res3", "res4", "res5"])
OUTPUT_NORMS = {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
CLASSIFIER = ("head.bias", "head.weight", "norm.bias", "norm.weight")


def load_tool():
    spec = importlib.util.spec_from_file_location("convert_pretrained_dinat", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return load_tool()


def imagenet_state_dict(**arch):
    """A DiNAT classifier's state dict: backbone names, a final `norm` and a `head`, random values."""
    model = D2DiNAT(**{**ARCH, **arch})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    state = {k: v for k, v in model.state_dict().items() if k not in OUTPUT_NORMS}
    width = model.num_features[-1]
    state.update({"norm.weight": torch.rand(width), "norm.bias": torch.rand(width),
                  "head.weight": torch.randn(10, width), "head.bias": torch.randn(10)})
    return state


class FullModel(nn.Module):
    """Stands in for the whole Mask2Former: the backbone under `backbone.` plus a head holding a
    LayerNorm called `norm` as wide as the classifier's final norm."""

    def __init__(self):
        super().__init__()
        self.backbone = D2DiNAT(**ARCH)
        self.sem_seg_head = nn.Module()
        self.sem_seg_head.norm = nn.LayerNorm(self.backbone.num_features[-1])


@pytest.mark.parametrize("layout", imagenet.LAYOUTS)
def test_converted_checkpoint_loads_every_backbone_tensor_into_d2dinat(tool, tmp_path, capsys, caplog, layout):
    state = imagenet_state_dict()
    torch.save(imagenet.in_layout(state, layout), tmp_path / "in.pth")

    result = tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])
    assert result.classifier == CLASSIFIER and result.unknown == ()
    out = capsys.readouterr().out
    assert "left out the classifier and its final norm" in out and "head.weight" in out
    assert ("bare state dict" in out) == layout.startswith("bare") and ("'module.' prefix" in out) == ("+" in layout)

    with open(tmp_path / "out.pkl", "rb") as f:
        written = pickle.load(f)
    assert written["matching_heuristics"] is True and written["__author__"]
    assert set(written["model"]) == set(state) - set(CLASSIFIER)
    assert written["imagenet_pretraining"]["classifier"] == list(CLASSIFIER)

    model = D2DiNAT(**ARCH)
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(str(tmp_path / "out.pkl"))
    loaded = model.state_dict()
    for name, value in state.items():
        if name not in CLASSIFIER:
            torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)
    # Only the per-level output norms are not in an ImageNet checkpoint; detectron2 reports them.
    assert set(loaded) - set(state) == OUTPUT_NORMS
    assert "not found in the checkpoint" in caplog.text and "norm0" in caplog.text
    assert all(torch.all(loaded[k] == (1.0 if k.endswith("weight") else 0.0)) for k in OUTPUT_NORMS)


def test_converted_checkpoint_loads_into_a_full_models_backbone(tool, tmp_path):
    state = imagenet_state_dict()
    torch.save({"model": state}, tmp_path / "in.pth")
    tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])

    model = FullModel()
    head_norm = model.sem_seg_head.norm.weight.detach().clone()
    DetectionCheckpointer(model).load(str(tmp_path / "out.pkl"))
    loaded = model.state_dict()
    for name, value in state.items():
        if name not in CLASSIFIER:
            torch.testing.assert_close(loaded["backbone." + name], value, rtol=0, atol=0, msg=name)
    # The classifier's final norm must not land on an unrelated layer of the same width.
    assert torch.equal(model.sem_seg_head.norm.weight, head_norm)


def test_checkpoint_without_model_or_state_dict_is_rejected(tool, tmp_path):
    torch.save({"weights": imagenet_state_dict()}, tmp_path / "in.pth")
    with pytest.raises(ValueError, match=r"in\.pth is not a DiNAT checkpoint.*neither a 'model' nor a 'state_dict'.*weights"):
        tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])
    assert not (tmp_path / "out.pkl").exists()


def test_checkpoint_without_dinat_weights_is_rejected(tool, tmp_path):
    torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}}, tmp_path / "in.pth")
    with pytest.raises(ValueError, match=r"in\.pth is not a DiNAT checkpoint: no backbone tensors.*conv1\.weight"):
        tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])


def test_pickled_objects_need_unsafe_load(tool, tmp_path):
    torch.save({"model": imagenet_state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "in.pth")
    with pytest.raises(ValueError, match="--unsafe-load"):
        tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])
    result = tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl"), "--unsafe-load"])
    assert result.classifier == CLASSIFIER


def test_command_line_reports_a_bad_file_without_a_traceback(tmp_path):
    torch.save({"weights": {}}, tmp_path / "in.pth")
    run = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.startswith("error:") and "neither a 'model' nor a 'state_dict'" in run.stderr
    assert "Traceback" not in run.stderr


# --- kernel sizes ---------------------------------------------------------------------------------


def test_a_kernel_size_that_does_not_fit_is_refused_by_name(tool, tmp_path):
    torch.save(imagenet_state_dict(), tmp_path / "k3.pth")
    with pytest.raises(KernelSizeMismatchError) as err:
        tool.main([str(tmp_path / "k3.pth"), str(tmp_path / "out.pkl"), "--kernel-size", "5"])
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'k3.pth'}: its relative position biases are for kernel size 3 ")
    assert "levels.0.blocks.0.attn.rpb [1, 5, 5] and 4 more tables" in message
    assert "but --kernel-size 5 has kernel size 5 ([1, 9, 9])" in message and "Pass --interpolate-rpb" in message
    assert not (tmp_path / "out.pkl").exists()


def test_interpolate_rpb_resizes_each_table_bicubically_and_says_so(tool, tmp_path, capsys):
    state = imagenet_state_dict()
    torch.save(state, tmp_path / "k3.pth")
    result = tool.main([str(tmp_path / "k3.pth"), str(tmp_path / "k5.pkl"), "--kernel-size", "5", "--interpolate-rpb"])
    out = capsys.readouterr().out
    assert "resized the relative position biases of 5 blocks from kernel size 3 to 5 (bicubic, align_corners=False)" in out
    assert "wrote 90 backbone tensors (kernel size 5)" in out
    assert len(result.interpolated) == 5

    model = D2DiNAT(**{**ARCH, "kernel_size": 5})
    checkpointer = Mask2FormerCheckpointer(model)
    checkpointer.load(str(tmp_path / "k5.pkl"))
    report = checkpointer.last_report
    assert report.pretraining.resized_from == 3 and report.pretraining.classifier == CLASSIFIER
    assert "resized from kernel size 3 to 5 by the converter (bicubic, align_corners=False)" in report.format()
    assert report.loaded == 90 and set(report.missing) == OUTPUT_NORMS and report.accounted_for
    loaded = model.state_dict()
    for name, value in state.items():
        if name.endswith("attn.rpb"):
            value = F.interpolate(value[None], size=(9, 9), mode="bicubic", align_corners=False)[0]
        if name not in CLASSIFIER:
            torch.testing.assert_close(loaded[name], value, rtol=0, atol=0, msg=name)


def test_help_documents_the_layouts_and_the_interpolation(tool, capsys):
    with pytest.raises(SystemExit) as done:
        tool.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--interpolate-rpb" in text and "mode='bicubic', align_corners=False" in text
    assert "bare (as the ImageNet DiNAT files are distributed)" in text and '"module." prefix' in text


def test_a_kernel_7_file_is_refused_for_a_kernel_11_config(tool, tmp_path):
    # KernelSizeMismatchError is a ValueError: the command line prints it as "error: ..." (see above)
    path = imagenet.write(tmp_path / imagenet.KERNEL_7, imagenet.KERNEL_7, compact=True)
    with pytest.raises(KernelSizeMismatchError) as err:
        tool.main([str(path), str(tmp_path / "out.pkl"), "--config-file", COCO_PANOPTIC])
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert f"but config {COCO_PANOPTIC} (MODEL.DINAT.KERNEL_SIZE) has kernel size 11 ([6, 21, 21])" in message
    assert "levels.0.blocks.0.attn.rpb [6, 13, 13] and 29 more tables" in message
    assert "Pass --interpolate-rpb" in message and "dinat_large_in22k_224_11x11interp.pth" in message
    assert not (tmp_path / "out.pkl").exists()
    with pytest.raises(SystemExit):  # --kernel-size must agree with the config
        tool.main([str(path), str(tmp_path / "out.pkl"), "--config-file", COCO_PANOPTIC, "--kernel-size", "7"])


def test_input_may_be_a_url(tool, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    torch.save(imagenet_state_dict(), tmp_path / "in.pth")
    with FileServer({"/imagenet22k/dinat.pth": Route((tmp_path / "in.pth").read_bytes())}) as server:
        url = server.url("/imagenet22k/dinat.pth")
        result = tool.main([url, str(tmp_path / "out.pkl")])
        tool.main([url, str(tmp_path / "out2.pkl")])
        assert server.requests["/imagenet22k/dinat.pth"] == 1
    assert result.classifier == CLASSIFIER and f"read {url}: a bare state dict" in capsys.readouterr().out


# --- the published DiNAT-L files and configs (names and shapes of the manifest) ---------------------


@pytest.mark.parametrize("config", PUBLISHED_CONFIGS)
def test_both_imagenet_files_fit_the_backbone_of_each_published_config(tool, config):
    """kernel 11 as it is, kernel 7 only with --interpolate-rpb; the backbone then lacks exactly its output norms."""
    cfg, shapes = tool.backbone_of_config(config)
    assert cfg.MODEL.DINAT.KERNEL_SIZE == 11
    for name in (imagenet.KERNEL_7, imagenet.KERNEL_11):
        state = imagenet.state(name, compact=True)  # real rpb tables (bicubic on meta is slow), small matrices
        if name == imagenet.KERNEL_7:
            with pytest.raises(KernelSizeMismatchError, match="levels.0.blocks.0.attn.rpb"):
                convert(state, kernel_size=11, source=name)
        result = convert(state, kernel_size=11, interpolate=True, source=name)
        assert result.classifier == CLASSIFIER and result.unknown == () and len(result.backbone) == 405
        assert len(result.interpolated) == (30 if name == imagenet.KERNEL_7 else 0)
        missing = tool.check_fits_backbone(result, shapes, source=name, config=config)
        assert missing == sorted(OUTPUT_NORMS)


def test_a_file_of_another_dinat_variant_is_refused_against_the_config(tool):
    _, shapes = tool.backbone_of_config(COCO_PANOPTIC)
    small = convert(imagenet_state_dict(kernel_size=11))
    with pytest.raises(ValueError, match=r"x\.pth does not fit the backbone of config .*another DiNAT variant.*tensors of another shape"):
        tool.check_fits_backbone(small, shapes, source="x.pth", config=COCO_PANOPTIC)


@pytest.mark.slow
def test_kernel_7_file_converts_with_interpolation_for_a_kernel_11_config_and_loads_every_value(tool, tmp_path, capsys):
    """End to end with real random values (200M): the kernel-7 file as distributed (bare), converted for the
    COCO panoptic config with --interpolate-rpb, loaded by MODEL.WEIGHTS into the full model."""
    state = imagenet.state(imagenet.KERNEL_7)
    torch.save(state, tmp_path / imagenet.KERNEL_7)
    tool.main([str(tmp_path / imagenet.KERNEL_7), str(tmp_path / "dinat_large_in22k_224.pkl"),
               "--config-file", COCO_PANOPTIC, "--interpolate-rpb"])
    out = capsys.readouterr().out
    assert "resized the relative position biases of 30 blocks from kernel size 7 to 11" in out
    assert f"fits the backbone of {COCO_PANOPTIC}: all 405 tensors" in out

    model = meta_model(COCO_PANOPTIC).to_empty(device="cpu")
    checkpointer = Mask2FormerCheckpointer(model, config_name=COCO_PANOPTIC)
    checkpointer.load(str(tmp_path / "dinat_large_in22k_224.pkl"))
    report = checkpointer.last_report
    assert report.headline() == (
        f"Checkpoint {tmp_path / 'dinat_large_in22k_224.pkl'} is an ImageNet DiNAT classification checkpoint "
        f"(kernel size 11, relative position biases resized from kernel size 7), converted by "
        f"tools/convert-pretrained-dinat-model-to-d2.py from {imagenet.KERNEL_7}: 405 of its 409 tensors loaded "
        f"into the backbone of the model built from config {COCO_PANOPTIC}."
    )
    assert report.accounted_for and report.loaded == 405
    loaded = model.state_dict()
    for name in imagenet.backbone_names(imagenet.KERNEL_7):
        value = state[name]
        if name.endswith("attn.rpb"):
            value = F.interpolate(value[None], size=(21, 21), mode="bicubic", align_corners=False)[0]
        assert torch.equal(loaded["backbone." + name], value), name
