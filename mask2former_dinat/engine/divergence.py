"""`DivergenceGuard`: a loss that became NaN or infinite stops training with a message naming the
iteration and the loss terms, and nothing is saved after it.

detectron2's SimpleTrainer raises FloatingPointError when the summed loss is not finite, before
the optimizer step, so the weights are still those of the previous iteration; the guard turns
that into `TrainingDivergedError` (which terms, the last good checkpoint, what to try) and turns
off checkpoint writing, so that no hook saves a `model_final.pth` that `--resume` would take for
a finished run.
"""
import math
from typing import Dict, Optional

import torch
from detectron2.engine import HookBase

__all__ = ["DivergenceGuard", "TrainingDivergedError"]

_LISTED = 8


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the message says where and what to do."""


class DivergenceGuard(HookBase):
    """Keeps the loss terms of the latest forward pass, to name those that diverged.

    `error(iteration)` builds the TrainingDivergedError; the Trainer raises it in place of
    detectron2's FloatingPointError.
    """

    def __init__(self):
        self._losses: Dict[str, torch.Tensor] = {}
        self._handle = None

    def before_train(self):
        self._handle = self.trainer._trainer.model.register_forward_hook(self._record)

    def after_train(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module, inputs, outputs):
        if module.training and isinstance(outputs, dict):
            self._losses = {k: v.detach() for k, v in outputs.items() if isinstance(v, torch.Tensor)}

    def error(self, iteration: int, cause: Optional[BaseException] = None) -> TrainingDivergedError:
        trainer = self.trainer
        trainer.checkpointer.save_to_disk = False  # keep the last good checkpoint the latest one
        values = {k: float(v.float().sum()) for k, v in self._losses.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            listed = ", ".join(f"{k} = {v}" for k, v in list(bad.items())[:_LISTED])
            more = f" and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
            terms = f"these loss terms are not finite: {listed}{more} ({len(bad)} of {len(values)} terms)"
        else:
            terms = f"the summed loss is not finite in another process ({cause})"
        last = trainer.checkpointer.get_checkpoint_file() if trainer.checkpointer.has_checkpoint() else ""
        kept = (
            f"The last good checkpoint is {last}, and nothing was saved after it"
            if last
            else "No checkpoint had been written yet, and none was written"
        )
        return TrainingDivergedError(
            f"Training diverged at iteration {iteration}: {terms}. {kept}. Lower SOLVER.BASE_LR, enable "
            "SOLVER.CLIP_GRADIENTS or lengthen SOLVER.WARMUP_ITERS, then continue with --resume "
            "(from the last good checkpoint) or start again."
        )
