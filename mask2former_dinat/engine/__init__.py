"""Training: the Trainer, and what detectron2 release 0.6 lacks for it.

`detectron2_release.is_release_0_6()` is the one probe every 0.6 workaround asks; on later
upstream detectron2 each steps aside and detectron2's own code runs:
- `launch`: multi-process launch on CPU (gloo), which 0.6's launch (CUDA and NCCL only) lacks;
- `trainer_optimizer_state`: the optimizer in checkpoints, which 0.6's DefaultTrainer leaves out.
"""
from .launch import launch
from .trainer import Trainer

__all__ = ["Trainer", "launch"]
