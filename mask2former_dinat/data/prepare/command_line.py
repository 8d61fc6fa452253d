"""The command line shared by the datasets/prepare_*.py scripts: --root, --splits, --workers."""
import argparse
import os

from ..datasets.register_ade20k_semantic import ADE20K_DIR, ADE20K_SPLITS
from ..datasets.registration import ENV_VAR, datasets_root
from .coco_semantic_from_panoptic import convert_coco_panoptic_to_semantic
from .parallel_map import default_workers

__all__ = ["run_ade20k", "run_coco_semantic"]


def _parse(doc, top, splits, argv, splits_help=None, choices=None):
    """(parser, args): --root (the folder holding ``top``/), --splits (default ``splits``), --workers."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help=f"folder holding {top}/ (default: ${ENV_VAR} or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(splits), choices=choices, help=splits_help)
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes (1: none)")
    return parser, parser.parse_args(argv)


def _require(parser, top, path):
    if not os.path.exists(path):
        parser.error(f"{path} does not exist; pass --root or set {ENV_VAR} to the folder holding {top}/")


def run_ade20k(doc, convert, required, argv=None):
    """Parse the command line, check the ``required`` sub-folders of ADEChallengeData2016 exist
    (each a format string with {dirname}), then ``convert(dataset_dir, splits, workers)`` and
    print what it returns (a count per split)."""
    parser, args = _parse(doc, ADE20K_DIR, ADE20K_SPLITS, argv, choices=list(ADE20K_SPLITS))
    dataset_dir = os.path.join(datasets_root(args.root), ADE20K_DIR)
    for split in args.splits:
        for sub in required:
            _require(parser, ADE20K_DIR, os.path.join(dataset_dir, sub.format(dirname=ADE20K_SPLITS[split])))
    for split, count in convert(dataset_dir, args.splits, args.workers).items():
        print(f"{split}: {count}")


def run_coco_semantic(doc, argv=None):
    """Parse the command line and write coco/panoptic_semseg_<split>/ for each split."""
    parser, args = _parse(doc, "coco", ["val2017", "train2017"], argv, splits_help="default: val2017 train2017")
    coco = os.path.join(datasets_root(args.root), "coco")
    for split in args.splits:
        panoptic_json = os.path.join(coco, "annotations", f"panoptic_{split}.json")
        panoptic_root = os.path.join(coco, f"panoptic_{split}")
        for path in (panoptic_json, panoptic_root):
            _require(parser, "coco", path)
        out = os.path.join(coco, f"panoptic_semseg_{split}")
        n = convert_coco_panoptic_to_semantic(panoptic_json, panoptic_root, out, workers=args.workers)
        print(f"{split}: wrote {n} semantic PNGs to {out}")
