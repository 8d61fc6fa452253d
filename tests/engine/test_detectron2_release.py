"""The one probe for detectron2 release 0.6, and each 0.6 workaround: applied on 0.6, aside on upstream."""
import importlib
import inspect
import logging
import sys

import pytest
import torch
from detectron2.evaluation import coco_evaluation

from mask2former_dinat.engine import detectron2_release
from mask2former_dinat.engine.trainer_optimizer_state import TrainerOptimizerState

# The module, not the function that mask2former_dinat.engine exports under the same name.
launch_module = importlib.import_module("mask2former_dinat.engine.launch")


@pytest.fixture(params=[True, False], ids=["release_0_6", "upstream"])
def release_0_6(request, monkeypatch):
    """Runs the test as on detectron2 release 0.6 and as on later upstream detectron2."""
    monkeypatch.setattr(detectron2_release, "is_release_0_6", lambda: request.param)
    return request.param


def test_probe_tells_release_0_6_by_its_coco_evaluation_signature():
    parameters = inspect.signature(coco_evaluation._evaluate_predictions_on_coco).parameters
    assert detectron2_release.is_release_0_6() == ("use_fast_impl" in parameters)
    assert detectron2_release.is_release_0_6() != ("cocoeval_fn" in parameters)


# --- launch: the CPU launcher ----------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA detectron2's launch always runs")
def test_cpu_launch_is_ours_on_0_6_and_detectron2s_on_upstream(release_0_6, monkeypatch):
    calls = []
    monkeypatch.setattr(launch_module, "_detectron2_launch", lambda *a, **k: calls.append("detectron2"))
    monkeypatch.setattr(launch_module.mp, "start_processes", lambda *a, **k: calls.append("ours"))
    launch_module.launch(print, 2, dist_url="auto")
    assert calls == (["ours"] if release_0_6 else ["detectron2"])


# --- the trainer's optimizer state in checkpoints ----------------------------------------------------


class _Inner:
    """Stands in for detectron2's SimpleTrainer: its state is the optimizer's."""

    def __init__(self):
        self.loaded = None

    def state_dict(self):
        return {"optimizer": {"step": 3}}

    def load_state_dict(self, state):
        self.loaded = state


class _DefaultTrainer:
    """Stands in for detectron2's DefaultTrainer: records what its own state methods do."""

    def __init__(self):
        self._trainer = _Inner()
        self.calls = []

    def state_dict(self):
        self.calls.append("detectron2 state_dict")
        return {"iteration": 7}

    def load_state_dict(self, state):
        self.calls.append("detectron2 load_state_dict")


class _Trainer(TrainerOptimizerState, _DefaultTrainer):
    pass


def test_optimizer_state_is_saved_by_us_on_0_6_and_left_to_detectron2_on_upstream(release_0_6):
    trainer = _Trainer()
    state = trainer.state_dict()
    assert trainer.calls == ["detectron2 state_dict"]
    if release_0_6:
        assert state == {"iteration": 7, "_trainer": {"optimizer": {"step": 3}}}
    else:
        assert state == {"iteration": 7}


def test_optimizer_state_is_loaded_by_us_on_0_6_and_left_to_detectron2_on_upstream(release_0_6):
    trainer = _Trainer()
    trainer.load_state_dict({"iteration": 7, "_trainer": {"optimizer": {"step": 3}}})
    assert trainer.calls == ["detectron2 load_state_dict"]
    assert trainer._trainer.loaded == ({"optimizer": {"step": 3}} if release_0_6 else None)


def test_checkpoint_without_optimizer_state_starts_it_fresh_on_0_6(monkeypatch, caplog):
    monkeypatch.setattr(detectron2_release, "is_release_0_6", lambda: True)
    trainer = _Trainer()
    with caplog.at_level(logging.WARNING):
        trainer.load_state_dict({"iteration": 7})
    assert trainer._trainer.loaded is None and trainer.calls == ["detectron2 load_state_dict"]
    assert "no optimizer state" in caplog.text


def test_compiled_ops_tell_the_offline_stand_in_from_a_real_build():
    from detectron2 import _C

    state, detail = detectron2_release.compiled_ops()
    if getattr(_C, detectron2_release.STUB_MARKER, False):
        assert state == "stand-in" and detail == _C.__file__
        assert detectron2_release.is_release_0_6()  # the offline fallback installs release 0.6 only
    else:
        assert state == "compiled" and detail == _C.__file__ and hasattr(_C, "get_compiler_version")


def test_compiled_ops_report_a_missing_extension_with_its_import_error(monkeypatch):
    import detectron2

    monkeypatch.delitem(sys.modules, "detectron2._C", raising=False)
    monkeypatch.delattr(detectron2, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "detectron2._C", None)  # makes `from detectron2 import _C` fail
    state, detail = detectron2_release.compiled_ops()
    assert state == "missing" and "detectron2._C" in detail
