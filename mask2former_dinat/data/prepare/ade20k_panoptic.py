"""ADE20K semantic + instance annotations -> COCO-format panoptic PNGs and JSON (what
``ade20k_panoptic_*`` reads).

Stuff segments come from the semantic annotation (one per stuff class present), thing segments
from the instance annotation (one per instance, pasted over stuff). Pixels of a thing class in
the semantic annotation that no instance covers stay void. Category ids are the 0-based
semantic ids; segment id = (category id + 1) * 1000 + instance number (0 for stuff).
"""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import id2rgb
from PIL import Image

from ..datasets.ade20k_categories import ADE20K_THING_IDS, ade20k_categories
from ..datasets.register_ade20k_semantic import ADE20K_SPLITS
from .ade20k_annotations import image_stems, read_instance_png, semantic_to_contiguous, thing_instances
from .parallel_map import parallel_map

__all__ = ["ade20k_panoptic_from_annotations", "convert_ade20k_panoptic"]

_LABEL_DIVISOR = 1000


def ade20k_panoptic_from_annotations(semantic_raw, instance_class, instance_index, source="<array>"):
    """semantic_raw: uint8 [H, W] (0..150); instance_class/instance_index: [H, W] (R and G of the
    instance PNG). Returns (segment ids int64 [H, W], 0 = void; segments_info list)."""
    semantic = semantic_to_contiguous(semantic_raw, source)
    things = set(ADE20K_THING_IDS)
    pan = np.zeros(semantic.shape, dtype=np.int64)
    segments = []

    def add(mask, category_id, number):
        segment_id = (category_id + 1) * _LABEL_DIVISOR + number
        pan[mask] = segment_id
        segments.append({"id": segment_id, "category_id": int(category_id), "iscrowd": 0})

    for category_id in np.unique(semantic):
        if category_id == 255 or category_id in things:
            continue
        add(semantic == category_id, int(category_id), 0)
    counts = {}
    for mask, category_id in thing_instances(instance_class, instance_index, source):
        counts[category_id] = counts.get(category_id, 0) + 1
        if counts[category_id] >= _LABEL_DIVISOR:
            raise ValueError(f"{source}: more than {_LABEL_DIVISOR - 1} instances of category {category_id}")
        add(mask, category_id, counts[category_id])

    # things pasted over stuff may shrink or remove stuff segments: measure at the end
    kept = []
    for seg in segments:
        mask = pan == seg["id"]
        if mask.any():
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            seg.update(area=int(mask_util.area(rle)), bbox=[int(v) for v in mask_util.toBbox(rle)])
            kept.append(seg)
    return pan, kept


def _convert_one(job):
    stem, image_path, semantic_path, instance_path, out_path = job
    with Image.open(image_path) as im:
        width, height = im.size
    with Image.open(semantic_path) as im:
        semantic_raw = np.asarray(im)
    instance_class, instance_index = read_instance_png(instance_path)
    if semantic_raw.shape != (height, width) or instance_class.shape != (height, width):
        raise ValueError(f"{stem}: image {width}x{height}, semantic {semantic_raw.shape}, instance {instance_class.shape} differ")
    pan, segments = ade20k_panoptic_from_annotations(semantic_raw, instance_class, instance_index, stem)
    Image.fromarray(id2rgb(pan)).save(out_path)
    image = {"id": stem, "file_name": stem + ".jpg", "width": width, "height": height}
    annotation = {"image_id": stem, "file_name": stem + ".png", "segments_info": segments}
    return image, annotation


def convert_ade20k_panoptic(dataset_dir, splits=tuple(ADE20K_SPLITS), workers=None):
    """dataset_dir: the ADEChallengeData2016 folder; splits: "train" and/or "val". Writes
    ade20k_panoptic_<split>/ and ade20k_panoptic_<split>.json; returns images per split."""
    written = {}
    for split in splits:
        dirname = ADE20K_SPLITS[split]
        out_dir = os.path.join(dataset_dir, f"ade20k_panoptic_{split}")
        os.makedirs(out_dir, exist_ok=True)
        jobs = [
            (
                stem,
                os.path.join(dataset_dir, "images", dirname, stem + ".jpg"),
                os.path.join(dataset_dir, "annotations", dirname, stem + ".png"),
                os.path.join(dataset_dir, "annotations_instance", dirname, stem + ".png"),
                os.path.join(out_dir, stem + ".png"),
            )
            for stem in image_stems(os.path.join(dataset_dir, "images", dirname))
        ]
        results = parallel_map(_convert_one, jobs, workers)
        with open(os.path.join(dataset_dir, f"ade20k_panoptic_{split}.json"), "w") as f:
            json.dump(
                {
                    "images": [r[0] for r in results],
                    "annotations": [r[1] for r in results],
                    "categories": ade20k_categories(),
                },
                f,
            )
        written[split] = len(results)
    return written
