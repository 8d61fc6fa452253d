#!/usr/bin/env python3
"""Write COCO semantic labels from the panoptic annotations.

For each split, reads <root>/coco/annotations/panoptic_<split>.json and
<root>/coco/panoptic_<split>/*.png and writes <root>/coco/panoptic_semseg_<split>/*.png:
pixel = contiguous category id 0..132 (position in detectron2's COCO_CATEGORIES), 255 = void.
These are the labels of the ``coco_2017_*_panoptic_with_sem_seg`` datasets.
"""
import argparse
import os

from mask2former_dinat.data.datasets.convert_coco_panoptic_to_semantic import convert_coco_panoptic_to_semantic
from mask2former_dinat.data.datasets.parallel_map import default_workers
from mask2former_dinat.data.datasets.registration import ENV_VAR, datasets_root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help=f"folder holding coco/ (default: ${ENV_VAR} or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=["val2017", "train2017"], help="default: val2017 train2017")
    parser.add_argument("--workers", type=int, default=default_workers(), help="worker processes (1: none)")
    args = parser.parse_args(argv)

    coco = os.path.join(datasets_root(args.root), "coco")
    for split in args.splits:
        panoptic_json = os.path.join(coco, "annotations", f"panoptic_{split}.json")
        panoptic_root = os.path.join(coco, f"panoptic_{split}")
        for path in (panoptic_json, panoptic_root):
            if not os.path.exists(path):
                parser.error(f"{path} does not exist; pass --root or set {ENV_VAR} to the folder holding coco/")
        out = os.path.join(coco, f"panoptic_semseg_{split}")
        n = convert_coco_panoptic_to_semantic(panoptic_json, panoptic_root, out, workers=args.workers)
        print(f"{split}: wrote {n} semantic PNGs to {out}")


if __name__ == "__main__":
    main()
