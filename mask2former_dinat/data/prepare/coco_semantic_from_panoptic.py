"""COCO panoptic annotations -> semantic PNGs with contiguous ids (what
``coco_2017_*_panoptic_with_sem_seg`` reads): pixel = index of its segment's category in
COCO_CATEGORIES (0..132), 255 where no segment is (void)."""
import json
import os

import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from panopticapi.utils import rgb2id
from PIL import Image

from .parallel_map import parallel_map

__all__ = ["panoptic_to_semantic", "convert_coco_panoptic_to_semantic"]


def panoptic_to_semantic(panoptic_rgb, segments_info, id_map, ignore_label=255):
    """panoptic_rgb: uint8 [H, W, 3] (segment id = R + 256 G + 256^2 B); segments_info: the JSON's
    list for this image; id_map: dataset category id -> contiguous id. Returns uint8 [H, W]."""
    ids = rgb2id(np.asarray(panoptic_rgb, dtype=np.uint32))
    out = np.full(ids.shape, ignore_label, dtype=np.uint8)
    for seg in segments_info:
        if seg["category_id"] not in id_map:
            raise ValueError(f"segment {seg['id']} has category {seg['category_id']}, which is not a known category")
        out[ids == seg["id"]] = id_map[seg["category_id"]]
    return out


def _convert_one(job):
    src, dst, segments, id_map = job
    with Image.open(src) as im:
        pan = np.asarray(im.convert("RGB"))
    Image.fromarray(panoptic_to_semantic(pan, segments, id_map)).save(dst)


def convert_coco_panoptic_to_semantic(panoptic_json, panoptic_root, sem_seg_root, categories=COCO_CATEGORIES, workers=None):
    """Write one semantic PNG per annotation of ``panoptic_json`` into ``sem_seg_root`` (same file
    names). Contiguous id = position in ``categories``. Returns the number of files written."""
    if len(categories) > 254:
        raise ValueError(f"{len(categories)} categories do not fit in uint8 labels with 255 = void")
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    with open(panoptic_json) as f:
        annotations = json.load(f)["annotations"]
    os.makedirs(sem_seg_root, exist_ok=True)
    jobs = [
        (os.path.join(panoptic_root, a["file_name"]), os.path.join(sem_seg_root, a["file_name"]), a["segments_info"], id_map)
        for a in annotations
    ]
    parallel_map(_convert_one, jobs, workers)
    return len(jobs)
