"""Needed by detectron2 release 0.6 only: its DefaultTrainer checkpoints no optimizer state.

Release 0.6 saves the iteration and the hooks' states (the LR scheduler) but not the optimizer
(nor AMP's grad scaler), so a resumed run restarts AdamW's moments. Later upstream code saves
them under "_trainer"; there this mixin steps aside.
"""
import logging

from . import detectron2_release

__all__ = ["TrainerOptimizerState"]


class TrainerOptimizerState:
    """Mixin before DefaultTrainer: on detectron2 0.6, checkpoints also hold `_trainer` (optimizer,
    AMP grad scaler), under the key and in the layout upstream detectron2 uses."""

    def state_dict(self):
        ret = super().state_dict()
        if detectron2_release.is_release_0_6():
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        if not detectron2_release.is_release_0_6():
            return super().load_state_dict(state_dict)
        # The optimizer before the hooks (the LR scheduler), as a schedule-following resume expects.
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logging.getLogger(__name__).warning(
                "The checkpoint has no optimizer state (saved by plain detectron2 0.6?); "
                "the optimizer starts fresh."
            )
        return super().load_state_dict(state_dict)
