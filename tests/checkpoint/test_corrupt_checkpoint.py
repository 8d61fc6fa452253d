"""A truncated or corrupt checkpoint: one message naming the file and what to do; on resume,
the newest complete checkpoint is used instead, with a warning that says so."""
import logging
import os

import pytest
import torch

from helpers.checkpoint_models import TinyModel, assert_same_weights
from mask2former_dinat.checkpoint import CorruptCheckpointError, Mask2FormerCheckpointer


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def _save(folder, name, model, mtime, **extra):
    Mask2FormerCheckpointer(model, str(folder)).save(name, **extra)
    path = os.path.join(folder, f"{name}.pth")
    os.utime(path, (mtime, mtime))  # the order of the saves, independent of the clock's resolution
    return path


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.3, 0.5, 0.9, 0.99])
def test_truncated_checkpoint_error_names_the_file_and_what_to_do(tmp_path, cache_dir, keep):
    path = _save(tmp_path, "model_0000001", TinyModel(), 1000)
    _truncate(path, keep)
    with pytest.raises(CorruptCheckpointError) as error:
        Mask2FormerCheckpointer(TinyModel()).load(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a readable PyTorch checkpoint")
    assert "truncated or corrupt" in message and "Download or copy it again" in message
    assert "\n" not in message


def test_resume_skips_a_truncated_latest_checkpoint_for_the_newest_complete_one(tmp_path, cache_dir, caplog):
    first, second = TinyModel(), TinyModel()
    _save(tmp_path, "model_0000001", first, 1000, iteration=1)
    _save(tmp_path, "model_0000002", TinyModel(), 1001, iteration=2)  # complete but older than the last
    _save(tmp_path, "model_0000003", second, 1002, iteration=3)
    latest = _save(tmp_path, "model_0000004", TinyModel(), 1003, iteration=4)
    _truncate(latest)
    _truncate(tmp_path / "model_0000003.pth", 0.9)

    model = TinyModel()
    with caplog.at_level(logging.WARNING):
        extra = Mask2FormerCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("model_0000003.pth is also unreadable" in w for w in warnings)
    assert any(
        w.startswith(f"Resuming from {tmp_path / 'model_0000002.pth'}, the newest complete checkpoint")
        and f"{latest} is not a readable PyTorch checkpoint" in w
        for w in warnings
    )


def test_resume_with_every_checkpoint_unreadable_names_the_latest(tmp_path, cache_dir):
    _truncate(_save(tmp_path, "model_0000001", TinyModel(), 1000))
    latest = _save(tmp_path, "model_final", TinyModel(), 1001)
    _truncate(latest)
    with pytest.raises(CorruptCheckpointError, match=f"{latest} is not a readable"):
        Mask2FormerCheckpointer(TinyModel(), str(tmp_path)).resume_or_load("", resume=True)


def test_resume_from_a_complete_latest_checkpoint_is_unchanged(tmp_path, cache_dir):
    source = TinyModel()
    _save(tmp_path, "model_0000001", TinyModel(), 1000)
    _save(tmp_path, "model_0000002", source, 1001)
    model = TinyModel()
    Mask2FormerCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert_same_weights(model, source)
