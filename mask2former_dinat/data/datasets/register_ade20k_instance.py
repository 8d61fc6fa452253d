"""ADE20K instance segmentation: ``ade20k_instance_{train,val}``.

COCO-format instance JSON (RLE masks) written by datasets/prepare_ade20k_ins_seg.py over the
100 thing classes; its category ids are the 0-based semantic ids of the things, mapped to
contiguous ids 0..99. detectron2's loader (``load_coco_json``).
"""
import functools
import os

from detectron2.data.datasets.coco import load_coco_json

from .ade20k_categories import ADE20K_COLORS, ADE20K_INSTANCE_CLASSES, ADE20K_THING_IDS
from .register_ade20k_semantic import ADE20K_DIR, ADE20K_SPLITS
from .registration import checked_loader, register_dataset

__all__ = ["ade20k_instance_metadata", "register_all_ade20k_instance"]

_HINT = "Make it with `python datasets/prepare_ade20k_ins_seg.py`"


def ade20k_instance_metadata():
    return {
        "thing_classes": list(ADE20K_INSTANCE_CLASSES),
        "thing_colors": [list(ADE20K_COLORS[i]) for i in ADE20K_THING_IDS],
        "thing_dataset_id_to_contiguous_id": {cat: i for i, cat in enumerate(ADE20K_THING_IDS)},
    }


def register_all_ade20k_instance(root):
    for split, dirname in ADE20K_SPLITS.items():
        name = f"ade20k_instance_{split}"
        image_dir = os.path.join(root, ADE20K_DIR, "images", dirname)
        json_file = os.path.join(root, ADE20K_DIR, f"ade20k_instance_{split}.json")
        what = "ADE20K instance"
        register_dataset(
            name,
            checked_loader(
                what, root, ADE20K_DIR, [image_dir, (json_file, _HINT)],
                functools.partial(load_coco_json, json_file, image_dir, name),
            ),
            json_file=json_file,
            image_root=image_dir,
            evaluator_type="coco",
            ignore_label=255,
            **ade20k_instance_metadata(),
        )
