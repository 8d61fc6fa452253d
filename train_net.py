#!/usr/bin/env python
"""Train or evaluate Mask2Former (DiNAT backbone) with detectron2.

    python train_net.py --config-file configs/ade20k/semantic-segmentation/dinat/<config>.yaml --num-gpus 8
    python train_net.py --config-file <config>.yaml --eval-only MODEL.WEIGHTS <checkpoint.pth>
    python train_net.py --config-file <config>.yaml --resume          # continue from OUTPUT_DIR
    python train_net.py --config-file <config>.yaml --datasets mine.yaml DATASETS.TRAIN "('mine_train',)" ...
    python train_net.py --datasets mine.yaml --check-data            # check the data, print the report

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
from mask2former_dinat.data import checks
from mask2former_dinat.data.checked_test_loader import UnreadableImageError
from mask2former_dinat.data.datasets import DatasetsFileError, datasets_from_file, register_datasets_file
from mask2former_dinat.data.fit_config import fit_config_to_datasets
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
    """This project's options beside detectron2's."""
    parser.add_argument(
        "--datasets", metavar="FILE.yaml",
        help="register the datasets of a datasets file (see README, 'Train on your data'); "
        "name them in DATASETS.TRAIN / DATASETS.TEST",
    )
    parser.add_argument(
        "--check-data", action="store_true",
        help="check every dataset of --datasets, print the report and exit (status 0: no problems, 1: problems)",
    )
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="leave out (and count in the log) broken entries instead of stopping: in training, the images the "
        "data check finds problems with; in evaluation, test images that are missing or unreadable",
    )
    return parser


def _config(args):
    """This project's defaults, then the file, then the command-line overrides."""
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    return cfg


def check_data(args):
    """Registers --datasets and checks its data: everything with --check-data (printing the report),
    else the datasets of DATASETS.TRAIN and DATASETS.TEST before training. Returns the exit status
    to stop with, or None to go on; with --skip-bad, records the training images to leave out in
    ``args.dropped``. Runs once, before the training processes start."""
    args.dropped = {}
    if not args.datasets:
        if args.check_data:
            print("--check-data checks the datasets of a datasets file: pass --datasets FILE.yaml", file=sys.stderr)
            return 2
        return None
    try:
        names = register_datasets_file(args.datasets)
    except DatasetsFileError as e:
        print(e, file=sys.stderr)
        return 2
    if args.check_data:
        reports = checks.check_datasets(names)
        print(checks.format_reports(reports))
        return 0 if all(r.ok for r in reports) else 1
    cfg = _config(args)
    try:
        fit_config_to_datasets(cfg)  # its errors (classes that disagree, ...) here, before any process starts
    except ValueError as e:
        print(f"Cannot use the datasets of {args.datasets} with this config: {e}", file=sys.stderr)
        return 2
    if args.eval_only:
        return None
    train = datasets_from_file(cfg.DATASETS.TRAIN)
    reports = checks.check_datasets(train + datasets_from_file(cfg.DATASETS.TEST))
    bad = [r for r in reports if not r.ok]
    print("Data check:\n" + checks.format_reports(reports), file=sys.stderr if bad else sys.stdout)
    if not bad:
        return None
    if not args.skip_bad:
        images = {i for r in bad for i in r.bad_images}
        print(
            f"Training refused: the data check found problems in {', '.join(r.name for r in bad)} (above). Fix those "
            f"entries, or pass --skip-bad to train without the {len(images)} image(s) they belong to.",
            file=sys.stderr,
        )
        return 1
    beyond = [r.name for r in bad if r.name in train and not r.droppable]
    if beyond:
        print(f"Training refused: problems in {', '.join(beyond)} (above) that no image can be left out for; fix them.",
              file=sys.stderr)
        return 1
    args.dropped = {r.name: (r.bad_images, r.counts.get("images", 0)) for r in bad if r.name in train and r.bad_images}
    return None


def setup(args):
    """The config: this project's defaults, then the file, then the command-line overrides, fitted to
    the datasets of --datasets (class count, mapper, evaluated outputs)."""
    cfg = _config(args)
    fitted = []
    if getattr(args, "datasets", None):
        register_datasets_file(args.datasets)
        fitted = fit_config_to_datasets(cfg)
    cuda_missing = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if cuda_missing:
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    logger = setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask2former_dinat")
    if cuda_missing:
        logger.warning("CUDA is not available: running on CPU (MODEL.DEVICE cpu).")
    for line in fitted:
        logger.info("Config fitted to the datasets: %s", line)
    for name, (images, total) in getattr(args, "dropped", {}).items():
        checks.skip_bad(name, images, total)  # logs how many it leaves out
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
    status = check_data(args)
    if status is not None:
        sys.exit(status)
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
