#!/usr/bin/env python
"""Train or evaluate Mask2Former (DiNAT backbone) with detectron2.

    python train_net.py --config-file configs/ade20k/semantic-segmentation/dinat/<config>.yaml --num-gpus 8
    python train_net.py --config-file <config>.yaml --eval-only MODEL.WEIGHTS <checkpoint.pth>
    python train_net.py --config-file <config>.yaml --resume          # continue from OUTPUT_DIR

Without CUDA it runs on CPU, and `--num-gpus N` starts N CPU processes joined with gloo.
The training itself is mask2former_dinat.engine.Trainer; this file is its command line.
"""
import sys

import torch
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import mask2former_dinat  # noqa: F401  (registers the model and the datasets)
from mask2former_dinat.checkpoint import (
    CheckpointDownloadError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    Mask2FormerCheckpointer,
    UnsafeCheckpointError,
)
from mask2former_dinat.config import get_cfg
from mask2former_dinat.data.checked_test_loader import UnreadableImageError
from mask2former_dinat.engine import Trainer, launch
from mask2former_dinat.engine.divergence import TrainingDivergedError

# Errors whose message says all a user needs (which file, what to do): printed without a traceback.
USER_ERRORS = (
    CheckpointDownloadError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    TrainingDivergedError,
    UnreadableImageError,
)


def _add_arguments(parser):
    """This project's options beside detectron2's default ones."""
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="evaluation: leave out (and count) test images that are missing or unreadable instead of stopping",
    )
    return parser


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
    Trainer.skip_bad_test_images = getattr(args, "skip_bad", False)
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
    args = _add_arguments(default_argument_parser()).parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except USER_ERRORS as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(1)
