"""DivergenceGuard in the Trainer's step: a loss term that becomes NaN stops training with a message
naming the iteration and the term, and the checkpoint of the previous iteration stays the last one.

(tests/engine/test_train_net_faults.py drives the other two ways, weights and outputs, end to end.)
"""
import pytest
import torch
from detectron2.engine import PeriodicCheckpointer, SimpleTrainer, TrainerBase
from torch import nn

from mask2former_dinat.checkpoint import Mask2FormerCheckpointer
from mask2former_dinat.engine import Trainer
from mask2former_dinat.engine.divergence import DivergenceGuard, TrainingDivergedError


class LogObjective(nn.Module):
    """Minimises log(w) by gradient descent: w falls below 0 within a few steps, and log(w) is NaN."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))

    def forward(self, batch):
        return {"loss_log": torch.log(self.w), "loss_const": self.w * 0 + 1}


def _trainer(output_dir, model=None):
    # The Trainer's own step and hooks around a toy model (its __init__ builds a model from a config).
    trainer = Trainer.__new__(Trainer)
    TrainerBase.__init__(trainer)
    model = model or LogObjective()
    data = iter(lambda: [{}], None)
    trainer._trainer = SimpleTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.6))
    trainer.checkpointer = Mask2FormerCheckpointer(model, str(output_dir), trainer=trainer)
    trainer._divergence_guard = DivergenceGuard()
    trainer.register_hooks([trainer._divergence_guard, PeriodicCheckpointer(trainer.checkpointer, 1)])
    return trainer


def test_nan_loss_names_iteration_and_term_and_keeps_the_previous_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(TrainingDivergedError) as error:
        TrainerBase.train(trainer, 0, 10)
    message = str(error.value)
    # w: 1 -> 0.4 -> -1.1: log(w) is NaN at iteration 2.
    assert message.startswith("Training diverged at iteration 2: these loss terms are not finite: loss_log = nan (1 of 2 terms)")
    assert f"The last good checkpoint is {tmp_path / 'model_0000001.pth'}, and nothing was saved after it" in message
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000000.pth", "model_0000001.pth"]
    # Saved after the step of iteration 1, the last with a finite loss: finite weights.
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["model"]["w"].item() == pytest.approx(-1.1)


class FailsAtIteration1(LogObjective):
    def forward(self, batch):
        if self.w.item() != 1.0:
            raise ValueError("an ordinary bug")
        return super().forward(batch)


def test_an_error_without_nan_or_inf_passes_through_unchanged(tmp_path):
    trainer = _trainer(tmp_path, FailsAtIteration1())
    with pytest.raises(ValueError, match="^an ordinary bug$"):
        TrainerBase.train(trainer, 0, 3)
    assert trainer.checkpointer.save_to_disk
