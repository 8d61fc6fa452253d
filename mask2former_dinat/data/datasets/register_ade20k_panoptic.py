"""ADE20K-150 panoptic segmentation: ``ade20k_panoptic_{train,val}``.

COCO-format panoptic PNGs + JSON written by datasets/prepare_ade20k_pan_seg.py, plus the
semantic PNGs of datasets/prepare_ade20k_sem_seg.py. 150 categories (100 things, 50 stuff);
the dataset ids in the JSON are the 0-based semantic ids, which are also the contiguous ids.
"""
import os

from .ade20k_categories import ade20k_categories
from .panoptic_with_sem_seg import panoptic_semseg_metadata, register_panoptic_with_sem_seg
from .register_ade20k_semantic import ADE20K_DIR, ADE20K_SPLITS

__all__ = ["ade20k_panoptic_metadata", "register_all_ade20k_panoptic"]

_HINTS = {
    "panoptic": "Make the panoptic annotations with `python datasets/prepare_ade20k_pan_seg.py`",
    "sem_seg": "Make annotations_detectron2/ with `python datasets/prepare_ade20k_sem_seg.py`",
}


def ade20k_panoptic_metadata():
    """Class names, colors and id maps of ADE20K panoptic (stuff map covers all 150 categories)."""
    return panoptic_semseg_metadata(ade20k_categories())


def register_all_ade20k_panoptic(root):
    meta = ade20k_panoptic_metadata()
    base = os.path.join(root, ADE20K_DIR)
    for split, dirname in ADE20K_SPLITS.items():
        files = {
            "image_root": os.path.join(base, "images", dirname),
            "panoptic_root": os.path.join(base, f"ade20k_panoptic_{split}"),
            "panoptic_json": os.path.join(base, f"ade20k_panoptic_{split}.json"),
            "sem_seg_root": os.path.join(base, "annotations_detectron2", dirname),
        }
        register_panoptic_with_sem_seg(
            f"ade20k_panoptic_{split}",
            "ADE20K panoptic",
            root,
            ADE20K_DIR,
            files,
            meta,
            hints=_HINTS,
            json_file=os.path.join(base, f"ade20k_instance_{split}.json"),
            evaluator_type="ade20k_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
        )
