"""COCO 2017 panoptic segmentation.

- ``coco_2017_{train,val}_panoptic``: detectron2's "standard" panoptic datasets (loader and
  metadata), with ``thing_classes``/``thing_colors`` over the 80 thing classes as Mask2Former
  sets them.
- ``coco_2017_{train,val}_panoptic_with_sem_seg``: the same images with ``sem_seg_file_name``
  (the semantic PNGs that datasets/prepare_coco_semantic_annos_from_panoptic.py writes) and
  Mask2Former's metadata: ``stuff_classes`` over all 133 categories and a stuff map that covers
  every category (things too), so the semantic evaluator sees contiguous ids 0..132.
"""
import functools
import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.coco_panoptic import load_coco_panoptic_json

from .panoptic_with_sem_seg import panoptic_semseg_metadata, register_panoptic_with_sem_seg
from .registration import checked_loader, register_dataset

__all__ = ["COCO_PANOPTIC_SPLITS", "coco_panoptic_semseg_metadata", "coco_panoptic_standard_metadata", "register_all_coco_panoptic"]

# name -> (image folder, instances json, panoptic PNG folder, panoptic json, semantic PNG folder)
COCO_PANOPTIC_SPLITS = {
    "coco_2017_train_panoptic": (
        "coco/train2017",
        "coco/annotations/instances_train2017.json",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
    ),
    "coco_2017_val_panoptic": (
        "coco/val2017",
        "coco/annotations/instances_val2017.json",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
    ),
}
_SEMSEG_HINTS = {"sem_seg": "Make the semantic PNGs with `python datasets/prepare_coco_semantic_annos_from_panoptic.py`"}


def coco_panoptic_semseg_metadata():
    """The COCO panoptic metadata (133 categories: 80 things, then 53 stuff)."""
    return panoptic_semseg_metadata(COCO_CATEGORIES)


def coco_panoptic_standard_metadata():
    """detectron2's standard COCO panoptic metadata (its stuff map holds the 53 stuff categories
    only), with the 80 thing names and colors in thing_classes/thing_colors."""
    meta = coco_panoptic_semseg_metadata()
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = {k: v for k, v in meta["stuff_dataset_id_to_contiguous_id"].items() if k not in things}
    return dict(meta, stuff_dataset_id_to_contiguous_id=stuff)


def register_all_coco_panoptic(root):
    standard_meta = coco_panoptic_standard_metadata()
    semseg_meta = coco_panoptic_semseg_metadata()
    for name, (image_dir, instances_json, panoptic_dir, panoptic_json, semseg_dir) in COCO_PANOPTIC_SPLITS.items():
        image_dir, instances_json, panoptic_dir, panoptic_json, semseg_dir = (
            os.path.join(root, p) for p in (image_dir, instances_json, panoptic_dir, panoptic_json, semseg_dir)
        )
        files = {"image_root": image_dir, "panoptic_root": panoptic_dir, "panoptic_json": panoptic_json}
        common = dict(json_file=instances_json, evaluator_type="coco_panoptic_seg", ignore_label=255, label_divisor=1000)

        load = functools.partial(load_coco_panoptic_json, panoptic_json, image_dir, panoptic_dir, standard_meta)
        register_dataset(
            name,
            checked_loader("COCO panoptic", root, "coco", list(files.values()), load),
            **files,
            **common,
            **standard_meta,
        )
        register_panoptic_with_sem_seg(
            name + "_with_sem_seg",
            "COCO panoptic with semantic",
            root,
            "coco",
            dict(files, sem_seg_root=semseg_dir),
            semseg_meta,
            hints=_SEMSEG_HINTS,
            **common,
        )
