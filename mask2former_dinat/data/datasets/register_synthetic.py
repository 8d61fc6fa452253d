"""The embedded synthetic panoptic dataset (mask2former_dinat/data/synthetic.py):
``synthetic_panoptic_{train,val}``, laid out and registered like
``coco_2017_*_panoptic_with_sem_seg``, under <root>/synthetic."""
import os

from .. import synthetic
from .panoptic_with_sem_seg import panoptic_semseg_metadata, register_panoptic_with_sem_seg

__all__ = ["register_synthetic", "register_all_synthetic", "synthetic_metadata"]


def synthetic_metadata():
    """Like COCO panoptic with sem_seg: contiguous id = index in synthetic.CATEGORIES."""
    return {**panoptic_semseg_metadata(synthetic.CATEGORIES), "evaluator_type": "coco_panoptic_seg",
            "ignore_label": 255, "label_divisor": 1000}


def register_synthetic(data_dir, prefix="synthetic_panoptic"):
    """Registers `<prefix>_train` and `<prefix>_val` for the splits under data_dir; returns the names."""
    meta = synthetic_metadata()
    hint = f"Create it with mask2former_dinat.data.synthetic.generate({str(data_dir)!r}) (`make demo` does)"
    root, top = os.path.split(os.path.normpath(data_dir))
    names = []
    for split in ("train", "val"):
        d = os.path.join(data_dir, split)
        files = {
            "image_root": os.path.join(d, "images"),
            "panoptic_root": os.path.join(d, "panoptic"),
            "panoptic_json": os.path.join(d, "panoptic.json"),
            "sem_seg_root": os.path.join(d, "sem_seg"),
        }
        name = f"{prefix}_{split}"
        register_panoptic_with_sem_seg(
            name, "synthetic dataset", root, top, files, meta,
            hints={"image": hint, "panoptic": hint, "sem_seg": hint},
            json_file=os.path.join(d, "instances.json"),
        )
        names.append(name)
    return names


def register_all_synthetic(root):
    register_synthetic(os.path.join(root, "synthetic"))
