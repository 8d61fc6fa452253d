"""ADE20K-150 semantic segmentation: ``ade20k_sem_seg_{train,val}``.

Images ``ADEChallengeData2016/images/<split>/*.jpg``, labels
``ADEChallengeData2016/annotations_detectron2/<split>/*.png`` (0..149, 255 = ignore; written by
datasets/prepare_ade20k_sem_seg.py). detectron2's loader (``load_sem_seg``).
"""
import functools
import os

from detectron2.data.datasets.coco import load_sem_seg

from .ade20k_categories import ADE20K_CLASSES, ADE20K_COLORS
from .registration import checked_loader, register_dataset

__all__ = ["ADE20K_SPLITS", "register_all_ade20k_semantic"]

ADE20K_DIR = "ADEChallengeData2016"
# dataset name suffix -> folder name of the split
ADE20K_SPLITS = {"train": "training", "val": "validation"}
_HINT = "Make annotations_detectron2/ with `python datasets/prepare_ade20k_sem_seg.py`"


def register_all_ade20k_semantic(root):
    for split, dirname in ADE20K_SPLITS.items():
        image_dir = os.path.join(root, ADE20K_DIR, "images", dirname)
        gt_dir = os.path.join(root, ADE20K_DIR, "annotations_detectron2", dirname)
        what = "ADE20K semantic"
        load = functools.partial(load_sem_seg, gt_dir, image_dir, gt_ext="png", image_ext="jpg")
        register_dataset(
            f"ade20k_sem_seg_{split}",
            checked_loader(what, root, ADE20K_DIR, [image_dir, (gt_dir, _HINT)], load),
            stuff_classes=list(ADE20K_CLASSES),
            stuff_colors=[list(c) for c in ADE20K_COLORS],
            stuff_dataset_id_to_contiguous_id={i: i for i in range(len(ADE20K_CLASSES))},
            image_root=image_dir,
            sem_seg_root=gt_dir,
            evaluator_type="sem_seg",
            ignore_label=255,
        )
