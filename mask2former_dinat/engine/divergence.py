"""`DivergenceGuard`: a loss, an output or weights that became NaN or infinite stop training with
a message naming the iteration and what diverged, and nothing is saved after it.

Three ways a run diverges:
- the loss is not finite: detectron2's SimpleTrainer raises FloatingPointError before the
  optimizer step, so the weights are still those of the previous iteration;
- a part of the model (backbone, head) outputs inf or NaN from finite but huge weights, and the
  step fails before any loss exists (the Hungarian matcher refuses a NaN cost matrix with a
  ValueError): the guard watches the outputs of the model's top-level parts;
- the loss is finite but the optimizer step makes weights inf or NaN: the guard checks the
  weights after every step, before the checkpoint hook can save them.
Each raises `TrainingDivergedError` (what diverged, the last good checkpoint, what to try) and
turns off checkpoint writing, so that no hook saves a `model_final.pth` that `--resume` would
take for a finished run.
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.engine import HookBase
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DivergenceGuard", "TrainingDivergedError"]

_LISTED = 8


class TrainingDivergedError(FloatingPointError):
    """Training produced NaN or infinite values; the message says where and what to do."""


def _float_tensors(value) -> List[torch.Tensor]:
    """The floating-point tensors in a (nested) output."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _float_tensors(v)]
    return []


def _finite(value) -> bool:
    """Whether every floating-point tensor in a (nested) output is finite (one device sync)."""
    tensors = _float_tensors(value)
    return not tensors or bool(torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all())


def _listing(names: Sequence[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


class DivergenceGuard(HookBase):
    """Watches one training step for NaN/inf: the loss terms and the outputs of the model's
    top-level parts (forward hooks), and the weights after the step. Register it before the
    checkpoint hook. The Trainer asks `error()` for the TrainingDivergedError when a step fails.
    """

    def __init__(self):
        self._losses: Dict[str, torch.Tensor] = {}
        self._nonfinite_outputs: List[str] = []
        self._handles = []

    def _model(self):
        model = self.trainer._trainer.model
        return model.module if isinstance(model, DistributedDataParallel) else model

    def before_train(self):
        model = self._model()
        self._handles = [model.register_forward_hook(self._record_losses)]
        for name, child in model.named_children():
            self._handles.append(child.register_forward_hook(self._output_checker(name)))

    def before_step(self):
        self._nonfinite_outputs = []

    def after_step(self):
        params = dict(self._model().named_parameters())
        # One sum per tensor: inf or NaN anywhere in a tensor makes its sum inf or NaN.
        finite = torch.isfinite(torch.stack([p.detach().float().sum() for p in params.values()]))
        if not bool(finite.all()):
            bad = [name for name, ok in zip(params, finite.tolist()) if not ok]
            what = (
                f"the optimizer step made these parameters infinite or NaN: {_listing(bad)} "
                f"({len(bad)} of {len(params)}; the loss terms were finite)"
            )
            raise self._error(self.trainer.iter, what)

    def after_train(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record_losses(self, module, inputs, outputs):
        if module.training and isinstance(outputs, dict):
            self._losses = {k: v.detach() for k, v in outputs.items() if isinstance(v, torch.Tensor)}

    def _output_checker(self, name: str):
        def check(module, inputs, outputs):
            if module.training and not _finite(outputs):
                self._nonfinite_outputs.append(name)

        return check

    def error(self, iteration: int, cause: BaseException) -> Optional[TrainingDivergedError]:
        """The TrainingDivergedError for a step that raised `cause`, or None when nothing in the
        step was NaN or infinite (then `cause` is some other failure)."""
        if self._nonfinite_outputs:
            what = (
                f"the outputs of {_listing(self._nonfinite_outputs)} became infinite or NaN, and the step "
                f"failed with {cause.__class__.__name__}: {cause}"
            )
            return self._error(iteration, what)
        if isinstance(cause, FloatingPointError):
            values = {k: float(v.float().sum()) for k, v in self._losses.items()}
            bad = [f"{k} = {v}" for k, v in values.items() if not math.isfinite(v)]
            if bad:
                what = f"these loss terms are not finite: {_listing(bad)} ({len(bad)} of {len(values)} terms)"
            else:
                what = f"the summed loss is not finite in another process ({cause})"
            return self._error(iteration, what)
        return None

    def _error(self, iteration: int, what: str) -> TrainingDivergedError:
        checkpointer = self.trainer.checkpointer
        checkpointer.save_to_disk = False  # keep the last good checkpoint the latest one
        last = checkpointer.get_checkpoint_file() if checkpointer.has_checkpoint() else ""
        kept = (
            f"The last good checkpoint is {last}, and nothing was saved after it"
            if last
            else "No checkpoint had been written yet, and none was written"
        )
        return TrainingDivergedError(
            f"Training diverged at iteration {iteration}: {what}. {kept}. Lower SOLVER.BASE_LR, enable "
            "SOLVER.CLIP_GRADIENTS or lengthen SOLVER.WARMUP_ITERS, then continue with --resume "
            "(from the last good checkpoint) or start again."
        )
