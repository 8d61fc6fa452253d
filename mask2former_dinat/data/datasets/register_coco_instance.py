"""COCO 2017 instance segmentation: ``coco_2017_train``, ``coco_2017_val``.

detectron2's builtin registration and loader, re-registered under the project's root with a
clear error when the files are missing.
"""
import functools
import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco import load_coco_json

from .registration import checked_loader, register_dataset

__all__ = ["COCO_INSTANCE_SPLITS", "coco_instance_metadata", "register_all_coco_instance"]

# name -> (image folder, instances json), relative to the datasets root
COCO_INSTANCE_SPLITS = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}


def coco_instance_metadata():
    """The 80 COCO thing classes: names, colors and dataset id -> contiguous id 0..79."""
    things = [c for c in COCO_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
    }


def register_all_coco_instance(root):
    for name, (image_dir, json_file) in COCO_INSTANCE_SPLITS.items():
        image_dir, json_file = os.path.join(root, image_dir), os.path.join(root, json_file)
        load = functools.partial(load_coco_json, json_file, image_dir, name)
        register_dataset(
            name,
            checked_loader("COCO instances", root, "coco", [image_dir, json_file], load),
            json_file=json_file,
            image_root=image_dir,
            evaluator_type="coco",
            ignore_label=255,
            **coco_instance_metadata(),
        )
