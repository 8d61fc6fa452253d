"""Reading checkpoints without running code from them: weights-only .pth, numpy-only .pkl, the opt-in."""
import argparse
import logging
import pickle

import numpy as np
import pytest
import torch

from helpers.checkpoint_models import TinyModel, assert_same_weights
from mask2former_dinat.checkpoint import (
    Mask2FormerCheckpointer,
    UnsafeCheckpointError,
    load_checkpoint_file,
)


# --- weights-only loading ---------------------------------------------------------------------


class _WritesFileWhenUnpickled:
    """Unpickling this runs open(path, "w"): the kind of code a malicious checkpoint carries."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pth_with_pickled_objects_is_refused_by_default_naming_the_opt_in(tmp_path, cache_dir):
    marker = tmp_path / "code_ran"
    path = tmp_path / "legacy.pth"
    torch.save({"model": TinyModel().state_dict(), "payload": _WritesFileWhenUnpickled(str(marker))}, path)

    model = TinyModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsafeCheckpointError, match=r"legacy\.pth.*io\.open.*M2F_DINAT_ALLOW_PICKLE=1"):
        Mask2FormerCheckpointer(model).load(str(path))
    assert not marker.exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pth_with_pickled_objects_loads_with_the_opt_in(tmp_path, cache_dir, monkeypatch):
    source = TinyModel()
    path = tmp_path / "legacy.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)

    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        Mask2FormerCheckpointer(TinyModel()).load(str(path))

    by_flag = TinyModel()
    assert Mask2FormerCheckpointer(by_flag, allow_pickle=True).load(str(path))["args"].lr == 0.1
    assert_same_weights(by_flag, source)

    monkeypatch.setenv("M2F_DINAT_ALLOW_PICKLE", "1")
    by_env = TinyModel()
    Mask2FormerCheckpointer(by_env).load(str(path))
    assert_same_weights(by_env, source)


def test_pth_holding_numpy_arrays_loads_weights_only(tmp_path, cache_dir):
    source = TinyModel()
    path = tmp_path / "numpy.pth"
    torch.save({"model": {k: v.numpy() for k, v in source.state_dict().items()}, "step": np.int64(3)}, path)
    model = TinyModel()
    assert Mask2FormerCheckpointer(model).load(str(path))["step"] == 3
    assert_same_weights(model, source)


def write_converted_backbone(path, model: TinyModel, protocol: int):
    """A .pkl as the DiNAT-to-detectron2 converter writes it: backbone names without 'backbone.'."""
    backbone = {k: v.numpy() for k, v in model.backbone.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": backbone, "__author__": "DiNAT", "matching_heuristics": True}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_converted_backbone_pkl_loads_by_name_matching(tmp_path, cache_dir, caplog, protocol):
    source = TinyModel()
    path = tmp_path / "dinat_backbone.pkl"
    write_converted_backbone(path, source, protocol)

    model = TinyModel()
    head_before = model.sem_seg_head.predictor.class_embed.weight.detach().clone()
    checkpointer = Mask2FormerCheckpointer(model)
    with caplog.at_level(logging.WARNING):
        checkpointer.load(str(path))

    assert_same_weights(model.backbone, source.backbone)
    assert torch.equal(model.sem_seg_head.predictor.class_embed.weight, head_before)
    report = checkpointer.last_report
    assert report.missing == ("sem_seg_head.predictor.class_embed.bias", "sem_seg_head.predictor.class_embed.weight")
    assert report.unexpected == () and report.shape_mismatches == ()
    assert "sem_seg_head.predictor.class_embed.{bias,weight}" in caplog.text


def test_converted_backbone_pkl_reports_a_kernel_size_mismatch(tmp_path, cache_dir):
    path = tmp_path / "k5.pkl"
    write_converted_backbone(path, TinyModel(depth=2, kernel=5), protocol=4)
    checkpointer = Mask2FormerCheckpointer(TinyModel(depth=2, kernel=3))
    checkpointer.load(str(path))
    report = checkpointer.last_report
    assert [m[0] for m in report.shape_mismatches] == [
        "backbone.levels.0.blocks.0.attn.rpb", "backbone.levels.0.blocks.1.attn.rpb"
    ]
    assert report.unexpected == ()
    assert "kernel size 5 in the checkpoint but 3 in the model" in report.format()


def test_pkl_with_other_objects_is_refused_by_default(tmp_path, cache_dir):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "args": argparse.Namespace(lr=1)}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"odd\.pkl.*argparse\.Namespace.*M2F_DINAT_ALLOW_PICKLE=1"):
        load_checkpoint_file(str(path))
    assert load_checkpoint_file(str(path), allow_pickle=True)["args"].lr == 1
