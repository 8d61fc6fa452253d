"""`StepSeeding`: the random state of every training iteration is a function of (seed, iteration).

Seeding torch, numpy and random before each step (with a seed drawn from the run's seed, the
iteration and the rank) makes a resumed run draw the same random numbers (point sampling in
the criterion, dropout, drop path) as an uninterrupted one, without saving RNG states per rank.
The data's randomness is the TrainStream's (seeded per sample), independent of this.
"""
import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from mask2former_dinat.data.train_stream import derived_seed

__all__ = ["StepSeeding"]


class StepSeeding(HookBase):
    """Before each step, seeds torch (all devices), numpy and random from (seed, iteration, rank).
    The seed is kept in checkpoints (hook state), so a resumed run keeps it."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_step(self):
        step_seed = derived_seed(self.seed, 3, self.trainer.iter, comm.get_rank())
        torch.manual_seed(step_seed)
        np.random.seed(step_seed)
        random.seed(step_seed)

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state_dict):
        self.seed = int(state_dict["seed"])
