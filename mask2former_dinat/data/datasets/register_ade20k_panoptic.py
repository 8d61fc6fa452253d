"""ADE20K-150 panoptic segmentation: ``ade20k_panoptic_{train,val}``.

COCO-format panoptic PNGs + JSON written by datasets/prepare_ade20k_pan_seg.py, plus the
semantic PNGs of datasets/prepare_ade20k_sem_seg.py. 150 categories (100 things, 50 stuff);
the dataset ids in the JSON are the 0-based semantic ids, which are also the contiguous ids.
"""
import functools
import os

from .ade20k_categories import ade20k_categories
from .panoptic_loader import load_panoptic_json
from .register_ade20k_semantic import ADE20K_DIR, ADE20K_SPLITS
from .registration import checked_loader, register_dataset, require_paths

__all__ = ["ade20k_panoptic_metadata", "register_all_ade20k_panoptic"]

_PAN_HINT = "Make the panoptic annotations with `python datasets/prepare_ade20k_pan_seg.py`"
_SEM_HINT = "Make annotations_detectron2/ with `python datasets/prepare_ade20k_sem_seg.py`"


def ade20k_panoptic_metadata():
    """Class names, colors and id maps of ADE20K panoptic (stuff map covers all 150 categories)."""
    cats = ade20k_categories()
    things = [c for c in cats if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "stuff_classes": [c["name"] for c in cats],
        "stuff_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def _load(what, root, json_file, image_dir, panoptic_dir, semseg_dir, meta):
    records = load_panoptic_json(json_file, image_dir, panoptic_dir, meta, semseg_dir=semseg_dir)
    first = records[0]
    require_paths(
        what, root, ADE20K_DIR,
        [first["file_name"], (first["pan_seg_file_name"], _PAN_HINT), (first["sem_seg_file_name"], _SEM_HINT)],
    )
    return records


def register_all_ade20k_panoptic(root):
    meta = ade20k_panoptic_metadata()
    for split, dirname in ADE20K_SPLITS.items():
        base = os.path.join(root, ADE20K_DIR)
        image_dir = os.path.join(base, "images", dirname)
        panoptic_dir = os.path.join(base, f"ade20k_panoptic_{split}")
        panoptic_json = os.path.join(base, f"ade20k_panoptic_{split}.json")
        semseg_dir = os.path.join(base, "annotations_detectron2", dirname)
        instances_json = os.path.join(base, f"ade20k_instance_{split}.json")
        what = "ADE20K panoptic"
        load = functools.partial(_load, what, root, panoptic_json, image_dir, panoptic_dir, semseg_dir, meta)
        register_dataset(
            f"ade20k_panoptic_{split}",
            checked_loader(
                what, root, ADE20K_DIR,
                [image_dir, (panoptic_json, _PAN_HINT), (panoptic_dir, _PAN_HINT), (semseg_dir, _SEM_HINT)],
                load,
            ),
            panoptic_root=panoptic_dir,
            image_root=image_dir,
            panoptic_json=panoptic_json,
            sem_seg_root=semseg_dir,
            json_file=instances_json,
            evaluator_type="ade20k_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **meta,
        )
