"""`Trainer`: detectron2's DefaultTrainer with this project's data, optimizer, schedule, evaluators
and checkpointer, which also trains multi-process on CPU."""
import logging
import os
import weakref
from collections import OrderedDict

from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from mask2former_dinat.checkpoint import Mask2FormerCheckpointer
from mask2former_dinat.data.checked_test_loader import build_checked_test_loader
from mask2former_dinat.data.train_stream import TrainStream, build_train_stream
from mask2former_dinat.evaluation import build_evaluator
from mask2former_dinat.modeling.test_time_augmentation import SemanticSegmentorWithTTA
from mask2former_dinat.solver import apply_scheduled_lr, build_lr_scheduler, build_optimizer

from .divergence import DivergenceGuard
from .step_seeding import StepSeeding
from .trainer_optimizer_state import TrainerOptimizerState

__all__ = ["Trainer"]


class Trainer(TrainerOptimizerState, DefaultTrainer):
    """detectron2's DefaultTrainer with this project's data, optimizer, schedule and evaluators,
    which also runs multi-process on CPU, keeps the optimizer (and AMP scaler) state in its
    checkpoints, writes them atomically and resumes on the schedule of its own config.

    A resumed run continues exactly where the checkpoint was taken: the data come from a
    TrainStream whose position is in the checkpoint, and StepSeeding seeds each iteration's
    random numbers from (seed, iteration). DivergenceGuard stops training, naming what became
    NaN or infinite, before a diverged state is saved. Evaluation names unreadable test images
    (or, with `skip_bad_test_images`, leaves them out)."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with three changes detectron2 has no hooks for: a CPU model is
        # wrapped in DDP without device ids (gloo runs), AMP without CUDA is refused up front, and
        # checkpoints go through Mask2FormerCheckpointer (URL weights, key reports, atomic saves).
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
            raise ValueError(
                f"SOLVER.AMP.ENABLED needs a CUDA device, but MODEL.DEVICE is {cfg.MODEL.DEVICE!r}; "
                "set SOLVER.AMP.ENABLED False to train on CPU."
            )

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cuda = next(model.parameters()).device.type == "cuda"
        model = create_ddp_model(model, broadcast_buffers=False, **({} if on_cuda else {"device_ids": None}))
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Mask2FormerCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        stream = self._trainer.data_loader
        seed = stream.seed if isinstance(stream, TrainStream) else self.cfg.SEED
        self._divergence_guard = DivergenceGuard()
        # The guard checks the weights after a step before the checkpoint hook may save them.
        return [StepSeeding(seed), self._divergence_guard, *super().build_hooks()]

    def run_step(self):
        try:
            super().run_step()
        except Exception as e:
            diverged = self._divergence_guard.error(self.iter, e)
            if diverged is None:
                raise
            raise diverged from None

    def state_dict(self):
        ret = super().state_dict()
        if isinstance(self._trainer.data_loader, TrainStream):
            ret["data_stream"] = self._trainer.data_loader.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        stream = self._trainer.data_loader
        if isinstance(stream, TrainStream):
            if "data_stream" in state_dict:
                stream.load_state_dict(state_dict["data_stream"])
            else:
                logging.getLogger(__name__).warning(
                    "The checkpoint has no data stream position (written by an older version): the data "
                    "order restarts from the beginning."
                )
        # The optimizer holds the lr saved with the checkpoint; the next iteration's lr comes from
        # this run's schedule, which may differ from the saved one (e.g. a larger MAX_ITER).
        if self.iter + 1 < self.max_iter:  # schedules are undefined past MAX_ITER
            apply_scheduled_lr(self.scheduler)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_stream(cfg)

    # Evaluation leaves out (and counts) test images that cannot be read (train_net.py --skip-bad);
    # False: such an image stops evaluation, named.
    skip_bad_test_images = False

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_checked_test_loader(cfg, dataset_name, skip_bad=cls.skip_bad_test_images)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate with test-time augmentation (TEST.AUG); results are named "<task>_TTA"."""
        logging.getLogger("detectron2.trainer").info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in results.items())
