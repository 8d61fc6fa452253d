#!/usr/bin/env python3
"""Write COCO semantic labels from the panoptic annotations.

For each split, reads <root>/coco/annotations/panoptic_<split>.json and
<root>/coco/panoptic_<split>/*.png and writes <root>/coco/panoptic_semseg_<split>/*.png:
pixel = contiguous category id 0..132 (position in detectron2's COCO_CATEGORIES), 255 = void.
These are the labels of the ``coco_2017_*_panoptic_with_sem_seg`` datasets.
"""
from mask2former_dinat.data.prepare.command_line import run_coco_semantic

if __name__ == "__main__":
    run_coco_semantic(__doc__)
