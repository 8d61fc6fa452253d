"""Command line shared by the prepare_ade20k_*.py scripts."""
import argparse
import os

from mask2former_dinat.data.datasets.parallel_map import default_workers
from mask2former_dinat.data.datasets.register_ade20k_semantic import ADE20K_DIR, ADE20K_SPLITS
from mask2former_dinat.data.datasets.registration import ENV_VAR, datasets_root


def run(doc, convert, required, argv=None):
    """Parse --root/--splits/--workers, check the ``required`` sub-folders of
    ADEChallengeData2016 exist (each a format string with {dirname}), then
    ``convert(dataset_dir, splits, workers)`` and print what it returns."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help=f"folder holding {ADE20K_DIR}/ (default: ${ENV_VAR} or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(ADE20K_SPLITS), choices=list(ADE20K_SPLITS))
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes (1: none)")
    args = parser.parse_args(argv)

    dataset_dir = os.path.join(datasets_root(args.root), ADE20K_DIR)
    for split in args.splits:
        for sub in required:
            path = os.path.join(dataset_dir, sub.format(dirname=ADE20K_SPLITS[split]))
            if not os.path.isdir(path):
                parser.error(f"{path} does not exist; pass --root or set {ENV_VAR} to the folder holding {ADE20K_DIR}/")
    for split, count in convert(dataset_dir, args.splits, args.workers).items():
        print(f"{split}: {count}")
