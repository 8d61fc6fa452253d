"""ADE20K instance annotations -> COCO-format instance JSON with RLE masks (what
``ade20k_instance_*`` reads). Category ids are the 0-based semantic ids of the 100 things."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from ..datasets.ade20k_categories import ADE20K_INSTANCE_CLASSES, ADE20K_THING_IDS
from ..datasets.register_ade20k_semantic import ADE20K_SPLITS
from .ade20k_annotations import image_stems, read_instance_png, thing_instances
from .parallel_map import parallel_map

__all__ = ["ade20k_instance_annotations", "convert_ade20k_instances"]


def ade20k_instance_annotations(instance_class, instance_index, image_id, source="<array>"):
    """COCO annotations (without "id") of one image: category_id, bbox [x, y, w, h], RLE
    segmentation (counts as str), area, iscrowd 0."""
    annotations = []
    for mask, category_id in thing_instances(instance_class, instance_index, source):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append(
            {
                "image_id": image_id,
                "category_id": int(category_id),
                "iscrowd": 0,
                "bbox": [int(v) for v in mask_util.toBbox(rle)],
                "area": int(mask_util.area(rle)),
                "segmentation": dict(rle, counts=rle["counts"].decode("ascii")),
            }
        )
    return annotations


def _convert_one(job):
    stem, image_path, instance_path = job
    with Image.open(image_path) as im:
        width, height = im.size
    instance_class, instance_index = read_instance_png(instance_path)
    if instance_class.shape != (height, width):
        raise ValueError(f"{stem}: image {width}x{height} but instance annotation {instance_class.shape}")
    image = {"id": stem, "file_name": stem + ".jpg", "width": width, "height": height}
    return image, ade20k_instance_annotations(instance_class, instance_index, stem, stem)


def convert_ade20k_instances(dataset_dir, splits=tuple(ADE20K_SPLITS), workers=None):
    """dataset_dir: the ADEChallengeData2016 folder; splits: "train" and/or "val". Writes
    ade20k_instance_<split>.json; returns the number of instances per split."""
    written = {}
    categories = [{"id": i, "name": n} for i, n in zip(ADE20K_THING_IDS, ADE20K_INSTANCE_CLASSES)]
    for split in splits:
        dirname = ADE20K_SPLITS[split]
        jobs = [
            (
                stem,
                os.path.join(dataset_dir, "images", dirname, stem + ".jpg"),
                os.path.join(dataset_dir, "annotations_instance", dirname, stem + ".png"),
            )
            for stem in image_stems(os.path.join(dataset_dir, "images", dirname))
        ]
        results = parallel_map(_convert_one, jobs, workers)
        annotations = [a for _, annos in results for a in annos]
        for i, a in enumerate(annotations, start=1):
            a["id"] = i
        with open(os.path.join(dataset_dir, f"ade20k_instance_{split}.json"), "w") as f:
            json.dump({"images": [r[0] for r in results], "annotations": annotations, "categories": categories}, f)
        written[split] = len(annotations)
    return written
