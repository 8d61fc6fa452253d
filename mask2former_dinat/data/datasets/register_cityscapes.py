"""Cityscapes (fine annotations): ``cityscapes_fine_{sem_seg,instance_seg}_{train,val,test}`` and
``cityscapes_fine_panoptic_{train,val}``.

detectron2's loaders, re-registered under the project's root with a clear error when files are
missing. Semantic labels are the ``*_gtFine_labelTrainIds.png`` files of cityscapesscripts'
createTrainIdLabelImgs; panoptic labels are those of its createPanopticImgs.

Instance masks come from the ``*_gtFine_polygons.json`` files (as the published models were
trained) when shapely is installed, which detectron2 needs to clip the polygons; otherwise
from the ``*_gtFine_instanceIds.png`` files as RLE masks.
"""
import functools
import importlib.util
import os

from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
from detectron2.data.datasets.cityscapes import load_cityscapes_instances, load_cityscapes_semantic
from detectron2.data.datasets.cityscapes_panoptic import load_cityscapes_panoptic

from .registration import checked_loader, register_dataset

__all__ = ["cityscapes_metadata", "cityscapes_panoptic_metadata", "register_all_cityscapes"]

_SPLITS = ("train", "val", "test")
_PANOPTIC_SPLITS = ("train", "val")
_TOP = "cityscapes"
_TRAINID_HINT = (
    "Make *_gtFine_labelTrainIds.png with cityscapesscripts: "
    "`CITYSCAPES_DATASET=<root>/cityscapes csCreateTrainIdLabelImgs`"
)
_PANOPTIC_HINT = (
    "Make the panoptic annotations with cityscapesscripts: "
    "`CITYSCAPES_DATASET=<root>/cityscapes csCreatePanopticImgs`"
)


def cityscapes_metadata():
    """Metadata of the semantic and instance tasks: 19 classes (contiguous id = trainId), of
    which 8 are things (contiguous thing id = their order among the things)."""
    things = [c for c in CITYSCAPES_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c["color"]) for c in things],
        "stuff_classes": [c["name"] for c in CITYSCAPES_CATEGORIES],
        "stuff_colors": [list(c["color"]) for c in CITYSCAPES_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in CITYSCAPES_CATEGORIES},
    }


def cityscapes_panoptic_metadata():
    """detectron2's Cityscapes panoptic metadata: every one of the 19 classes under both thing_*
    and stuff_* names; dataset ids map to trainIds."""
    return {
        "thing_classes": [c["name"] for c in CITYSCAPES_CATEGORIES],
        "thing_colors": [list(c["color"]) for c in CITYSCAPES_CATEGORIES],
        "stuff_classes": [c["name"] for c in CITYSCAPES_CATEGORIES],
        "stuff_colors": [list(c["color"]) for c in CITYSCAPES_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: c["trainId"] for c in CITYSCAPES_CATEGORIES if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: c["trainId"] for c in CITYSCAPES_CATEGORIES if not c["isthing"]
        },
    }


def _load_instances(image_dir, gt_dir):
    from_json = importlib.util.find_spec("shapely") is not None
    return load_cityscapes_instances(image_dir, gt_dir, from_json=from_json, to_polygons=from_json)


def register_all_cityscapes(root):
    meta = cityscapes_metadata()
    for split in _SPLITS:
        image_dir = os.path.join(root, _TOP, "leftImg8bit", split)
        gt_dir = os.path.join(root, _TOP, "gtFine", split)
        files = dict(image_dir=image_dir, gt_dir=gt_dir, ignore_label=255)

        what = "Cityscapes instance"
        load = functools.partial(_load_instances, image_dir, gt_dir)
        register_dataset(
            f"cityscapes_fine_instance_seg_{split}",
            checked_loader(what, root, _TOP, [image_dir, gt_dir], load),
            evaluator_type="cityscapes_instance",
            **files,
            **meta,
        )

        what = "Cityscapes semantic"
        load = functools.partial(load_cityscapes_semantic, image_dir, gt_dir)
        register_dataset(
            f"cityscapes_fine_sem_seg_{split}",
            checked_loader(what, root, _TOP, [image_dir, gt_dir], load, _TRAINID_HINT),
            evaluator_type="cityscapes_sem_seg",
            **files,
            **meta,
        )

    meta = cityscapes_panoptic_metadata()
    for split in _PANOPTIC_SPLITS:
        image_dir = os.path.join(root, _TOP, "leftImg8bit", split)
        gt_dir = os.path.join(root, _TOP, "gtFine", split)
        panoptic_dir = os.path.join(root, _TOP, "gtFine", f"cityscapes_panoptic_{split}")
        panoptic_json = os.path.join(root, _TOP, "gtFine", f"cityscapes_panoptic_{split}.json")
        what = "Cityscapes panoptic"
        load = functools.partial(load_cityscapes_panoptic, image_dir, panoptic_dir, panoptic_json, meta)
        register_dataset(
            f"cityscapes_fine_panoptic_{split}",
            checked_loader(
                what, root, _TOP,
                [image_dir, gt_dir, (panoptic_json, _PANOPTIC_HINT), (panoptic_dir, _PANOPTIC_HINT)],
                load, f"{_PANOPTIC_HINT}; {_TRAINID_HINT}",
            ),
            panoptic_root=panoptic_dir,
            image_root=image_dir,
            panoptic_json=panoptic_json,
            gt_dir=gt_dir,
            evaluator_type="cityscapes_panoptic_seg",
            ignore_label=255,
            label_divisor=1000,
            **meta,
        )
