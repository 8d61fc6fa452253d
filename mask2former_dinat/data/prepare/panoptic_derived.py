"""What Mask2Former reads beside a COCO panoptic dataset, derived from its annotations once and
cached: semantic PNGs (contiguous class ids, 255 void: panoptic training and mIoU) and a COCO
instance JSON of the thing segments (RLE masks: instance AP).

Entries that cannot be converted (a PNG missing or unreadable, a segment of an unknown category)
are left out rather than raising: the data check (mask2former_dinat/data/checks) names them, and
training refuses or drops them.
"""
import json
import os
import shutil

import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import rgb2id
from PIL import Image

from .coco_semantic_from_panoptic import panoptic_to_semantic
from .parallel_map import parallel_map

__all__ = ["derive_from_panoptic"]

_DONE = "done.json"


def _derive_one(job):
    """(instance annotations without ids, or None when the PNG cannot be read) of one panoptic annotation."""
    png, sem_out, image_id, segments, id_map, thing_ids = job
    try:
        with Image.open(png) as im:
            pan = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        return None
    known = [s for s in segments if s.get("category_id") in id_map]
    if sem_out is not None:
        Image.fromarray(panoptic_to_semantic(pan, known, id_map)).save(sem_out)
    ids = rgb2id(pan)
    instances = []
    for seg in known:
        if seg["category_id"] not in thing_ids:
            continue
        mask = ids == seg["id"]
        if not mask.any():
            continue
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        instances.append({
            "image_id": image_id, "category_id": seg["category_id"], "iscrowd": int(seg.get("iscrowd", 0)),
            "area": int(mask_util.area(rle)), "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
        })
    return instances


def derive_from_panoptic(panoptic_json, panoptic_root, categories, out_dir, semantic=True, workers=None):
    """Write ``out_dir``/instances.json and, with ``semantic``, ``out_dir``/sem_seg/<annotation
    file name> (contiguous id = index in ``categories``, COCO category dicts with "isthing"),
    unless ``out_dir`` already holds them. The folder appears complete or not at all (written
    beside it, then renamed), so concurrent processes may call this. Returns ``out_dir``."""
    if os.path.isfile(os.path.join(out_dir, _DONE)):
        return out_dir
    with open(panoptic_json) as f:
        data = json.load(f)
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    thing_ids = {c["id"] for c in categories if c["isthing"]}
    tmp = f"{out_dir}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "sem_seg"))
    jobs = [
        (os.path.join(panoptic_root, a["file_name"]),
         os.path.join(tmp, "sem_seg", a["file_name"]) if semantic else None,
         a.get("image_id"), a.get("segments_info", []), id_map, thing_ids)
        for a in data.get("annotations", [])
    ]
    annotations = []
    for result in parallel_map(_derive_one, jobs, workers if workers is not None else (1 if len(jobs) < 64 else None)):
        for ann in result or ():
            annotations.append(dict(ann, id=len(annotations) + 1))
    instances = {
        "images": data.get("images", []),
        "annotations": annotations,
        "categories": [{"id": c["id"], "name": c["name"]} for c in categories if c["isthing"]],
    }
    with open(os.path.join(tmp, "instances.json"), "w") as f:
        json.dump(instances, f)
    with open(os.path.join(tmp, _DONE), "w") as f:
        json.dump({"panoptic_json": os.path.abspath(panoptic_json), "semantic": bool(semantic)}, f)
    os.makedirs(os.path.dirname(out_dir) or ".", exist_ok=True)
    try:
        os.rename(tmp, out_dir)
    except OSError:  # another process finished first (or a stale partial folder is in the way)
        if not os.path.isfile(os.path.join(out_dir, _DONE)):
            shutil.rmtree(out_dir, ignore_errors=True)
            os.rename(tmp, out_dir)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
