"""tools/convert-pretrained-dinat-model-to-d2.py: an ImageNet DiNAT checkpoint becomes a .pkl that
detectron2's DetectionCheckpointer loads into D2DiNAT, alone or as a full model's `backbone`."""
import argparse
import importlib.util
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from mask2former_dinat.modeling.backbone.dinat import D2DiNAT

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert-pretrained-dinat-model-to-d2.py"
ARCH = dict(embed_dim=16, depths=[1, 2, 1, 1], num_heads=[1, 2, 4, 8], kernel_size=3,
            dilations=[[2], [1, 2], [1], [1]], mlp_ratio=2.0, layer_scale=1e-5,
            out_features=["res2", "res3", "res4", "res5"])
OUTPUT_NORMS = {f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
CLASSIFIER = ["head.bias", "head.weight", "norm.bias", "norm.weight"]


def load_tool():
    spec = importlib.util.spec_from_file_location("convert_pretrained_dinat", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return load_tool()


def imagenet_state_dict():
    """A DiNAT classifier's state dict: backbone names, a final `norm` and a `head`, random values."""
    model = D2DiNAT(**ARCH)
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


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "state_dict+module."])
def test_converted_checkpoint_loads_every_backbone_tensor_into_d2dinat(tool, tmp_path, capsys, caplog, wrapper):
    state = imagenet_state_dict()
    saved = {("module." + k if wrapper.endswith("module.") else k): v for k, v in state.items()}
    torch.save({wrapper.split("+")[0]: saved, "epoch": 300}, tmp_path / "in.pth")

    result = tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])
    assert result.dropped_classifier == CLASSIFIER and result.dropped_unknown == []
    assert "head.weight" in capsys.readouterr().out

    with open(tmp_path / "out.pkl", "rb") as f:
        written = pickle.load(f)
    assert written["matching_heuristics"] is True and written["__author__"]
    assert set(written["model"]) == set(state) - set(CLASSIFIER)

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
    with pytest.raises(ValueError, match="neither a 'model' nor a 'state_dict'.*weights"):
        tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])
    assert not (tmp_path / "out.pkl").exists()


def test_checkpoint_without_dinat_weights_is_rejected(tool, tmp_path):
    torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 7, 7), "fc.weight": torch.zeros(10, 4)}}, tmp_path / "in.pth")
    with pytest.raises(ValueError, match="no DiNAT backbone tensors.*conv1.weight"):
        tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])


def test_pickled_objects_need_unsafe_load(tool, tmp_path):
    torch.save({"model": imagenet_state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "in.pth")
    with pytest.raises(ValueError, match="--unsafe-load"):
        tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")])
    result = tool.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pkl"), "--unsafe-load"])
    assert result.dropped_classifier == CLASSIFIER


def test_command_line_reports_a_bad_file_without_a_traceback(tmp_path):
    torch.save({"weights": {}}, tmp_path / "in.pth")
    run = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "in.pth"), str(tmp_path / "out.pkl")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.startswith("error:") and "neither a 'model' nor a 'state_dict'" in run.stderr
    assert "Traceback" not in run.stderr
