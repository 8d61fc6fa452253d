#!/usr/bin/env python
"""Train or evaluate Mask2Former (DiNAT backbone) with detectron2.

    python train_net.py --config-file configs/ade20k/semantic-segmentation/dinat/<config>.yaml --num-gpus 8
    python train_net.py --config-file <config>.yaml --eval-only MODEL.WEIGHTS <checkpoint.pth>
    python train_net.py --config-file <config>.yaml --resume          # continue from OUTPUT_DIR

Without CUDA it runs on CPU, and `--num-gpus N` starts N CPU processes joined with gloo.
"""
import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import mask2former_dinat  # noqa: F401  (registers the model and the datasets)
from mask2former_dinat.config import get_cfg
from mask2former_dinat.data.dataset_mappers import build_train_loader as build_mapper_train_loader
from mask2former_dinat.checkpoint import Mask2FormerCheckpointer
from mask2former_dinat.engine import launch
from mask2former_dinat.evaluation import build_evaluator
from mask2former_dinat.modeling.test_time_augmentation import SemanticSegmentorWithTTA
from mask2former_dinat.solver import apply_scheduled_lr, build_lr_scheduler, build_optimizer


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with this project's data, optimizer, schedule and
    evaluators, which also runs multi-process on CPU, keeps the optimizer (and AMP scaler)
    state in its checkpoints and writes them atomically."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with three changes detectron2 0.6 has no hooks for: a CPU
        # model is wrapped in DDP without device ids (gloo runs), AMP without CUDA is refused
        # up front, and checkpoints go through Mask2FormerCheckpointer (URL weights, key
        # reports, atomic saves).
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

    # detectron2 0.6 saves only the iteration and hook states; keep the optimizer too.
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        # Optimizer first, then the hooks (the LR scheduler): the next iteration's lr then comes
        # from this run's schedule, which may differ from the saved one (e.g. a larger MAX_ITER).
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logging.getLogger(__name__).warning(
                "The checkpoint has no optimizer state (saved by plain detectron2 0.6?); "
                "the optimizer starts fresh."
            )
        super().load_state_dict(state_dict)
        if self.iter + 1 < self.max_iter:  # schedules are undefined past MAX_ITER
            apply_scheduled_lr(self.scheduler)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_mapper_train_loader(cfg)

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


def setup(args):
    """The config: this project's defaults, then the file, then the command-line overrides."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cuda_missing = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if cuda_missing:
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    logger = setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former_dinat")
    if cuda_missing:
        logger.warning("CUDA is not available: running on CPU (MODEL.DEVICE cpu).")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # Evaluation loads every weight or fails with a report of the keys that do not fit.
        checkpointer = Mask2FormerCheckpointer(
            model, save_dir=cfg.OUTPUT_DIR, strict=True, config_name=args.config_file or None
        )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
