"""Write small datasets in the real on-disk formats of COCO, ADE20K and Cityscapes.

A dataset is written from ``Scene``s: an RGB image and non-overlapping segments, each with the
dataset's own category id, a boolean mask and a flat colour it is painted with (so a test can
check that a mapped mask still covers pixels of that colour). Pixels outside every segment are
void. ``make_scene`` builds one from two stuff bands, thing rectangles, an optional crowd
rectangle and a void band on the right.

Each ``write_*`` returns what it wrote: the paths, and per image the expected labels in the
project's contiguous ids (``records``), computed here independently of the project's code.

``use_datasets_root(root)`` registers the project's datasets under ``root`` for a ``with`` block.
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import id2rgb
from PIL import Image

__all__ = [
    "Segment",
    "Scene",
    "make_scene",
    "coco_scenes",
    "write_coco_instances",
    "write_coco_panoptic",
    "write_coco",
    "CUSTOM_CATEGORIES",
    "CUSTOM_CLASSES",
    "custom_scenes",
    "write_sem_seg",
    "write_custom_datasets",
    "ade20k_scenes",
    "write_ade20k",
    "cityscapes_scenes",
    "write_cityscapes",
    "use_datasets_root",
    "run_prepare_scripts",
]

# Flat segment colours, far apart so that a mapped mask's colour identifies its segment.
SEGMENT_COLORS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 0, 128),
]
VOID_COLOR = (20, 20, 20)


@dataclass
class Segment:
    category_id: int  # the dataset's own id: COCO category id, ADE20K label 1..150, Cityscapes label id
    mask: np.ndarray  # bool [H, W]
    iscrowd: int = 0
    color: Tuple[int, int, int] = (0, 0, 0)


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3], RGB
    segments: List[Segment] = field(default_factory=list)

    @property
    def shape(self):
        return self.image.shape[:2]


def make_scene(height, width, stuff, things, crowd=None, seed=0, void_cols=2):
    """Stuff band ``stuff[0]`` on top and ``stuff[1]`` below, one rectangle per id in ``things``
    (left to right, in distinct column slots), a crowd rectangle of category ``crowd`` after
    them, and ``void_cols`` unlabelled columns on the right. Segment order: stuff, things, crowd."""
    rng = np.random.default_rng(seed)
    labelled_w = width - void_cols
    split_row = height // 2 + int(rng.integers(-2, 3))
    owner = np.full((height, width), -1, dtype=np.int64)  # index into `segments`, -1 = void
    segments = [Segment(stuff[0], None), Segment(stuff[1], None)]
    owner[:split_row, :labelled_w] = 0
    owner[split_row:, :labelled_w] = 1

    rects = [(c, 0) for c in things] + ([(crowd, 1)] if crowd is not None else [])
    slot = labelled_w // max(1, len(rects))
    if slot < 5 or height < 8:
        raise ValueError(f"a {height}x{width} scene is too small for {len(rects)} rectangles")
    for k, (category_id, iscrowd) in enumerate(rects):
        x0 = k * slot + int(rng.integers(0, 2))
        x1 = (k + 1) * slot - int(rng.integers(0, 2))
        rh = int(rng.integers(height // 3, height - 2))
        y0 = int(rng.integers(1, height - rh))
        owner[y0 : y0 + rh, x0:x1] = len(segments)
        segments.append(Segment(category_id, None, iscrowd))

    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = VOID_COLOR
    kept = []
    for i, seg in enumerate(segments):
        seg.mask = owner == i
        if not seg.mask.any():
            continue
        seg.color = SEGMENT_COLORS[len(kept) % len(SEGMENT_COLORS)]
        image[seg.mask] = seg.color
        kept.append(seg)
    return Scene(image, kept)


def _rect_polygon(mask):
    """[x0, y0, x1, y0, x1, y1, x0, y1] (exclusive ends) if ``mask`` is exactly its bounding
    rectangle, else None. pycocotools rasterises this polygon back to the same pixels."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if mask[y0:y1, x0:x1].all() and mask.sum() == (y1 - y0) * (x1 - x0):
        return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]
    return None


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE (as crowd annotations use): column-major run lengths, zeros first."""
    flat = np.asfortranarray(mask).reshape(-1, order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": list(mask.shape)}


def _bbox_xywh(mask):
    return [int(v) for v in mask_util.toBbox(mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))]


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


# ---------------------------------------------------------------------------------------- COCO


def coco_scenes(num_images=2, size=(48, 64), seed=0):
    """Sky and grass, two persons and a car, a crowd of persons, a void band."""
    return [
        make_scene(*size, stuff=(187, 193), things=(1, 3, 1), crowd=1, seed=seed + i)
        for i in range(num_images)
    ]


def _coco_images(root, split, scenes, write_images=True):
    image_dir = os.path.join(root, "coco", split)
    os.makedirs(image_dir, exist_ok=True)
    images = []
    for i, scene in enumerate(scenes):
        image_id = 1000 + i
        file_name = f"{image_id:012d}.jpg"
        if write_images:
            Image.fromarray(scene.image).save(os.path.join(image_dir, file_name), quality=100, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "height": scene.shape[0], "width": scene.shape[1]})
    return image_dir, images


def _coco_categories(categories):
    if categories is None:
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

        return COCO_CATEGORIES
    return categories


def write_coco_instances(root, split="val2017", scenes=None, categories=None):
    """<root>/coco/<split>/*.jpg and coco/annotations/instances_<split>.json: non-crowd things as
    polygons when rectangular (compressed RLE otherwise), crowds as uncompressed RLE, all 80
    thing categories (or the things of ``categories``, COCO panoptic category dicts).
    records[i]["instances"]: {"category_id" (contiguous 0..79), "mask", "iscrowd"}."""
    scenes = coco_scenes() if scenes is None else scenes
    thing_cats = [c for c in _coco_categories(categories) if c["isthing"]]
    contiguous = {c["id"]: i for i, c in enumerate(thing_cats)}
    image_dir, images = _coco_images(root, split, scenes)
    annotations, records = [], []
    for image, scene in zip(images, scenes):
        instances = []
        for seg in scene.segments:
            if seg.category_id not in contiguous:
                continue
            if seg.iscrowd:
                segmentation = _uncompressed_rle(seg.mask)
            else:
                polygon = _rect_polygon(seg.mask)
                if polygon is not None:
                    segmentation = [polygon]
                else:
                    segmentation = mask_util.encode(np.asfortranarray(seg.mask.astype(np.uint8)))
                    segmentation["counts"] = segmentation["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": seg.category_id,
                    "iscrowd": int(seg.iscrowd),
                    "area": float(seg.mask.sum()),
                    "bbox": [float(v) for v in _bbox_xywh(seg.mask)],
                    "segmentation": segmentation,
                }
            )
            instances.append({"category_id": contiguous[seg.category_id], "mask": seg.mask, "iscrowd": seg.iscrowd})
        records.append({"image_id": image["id"], "file_name": os.path.join(image_dir, image["file_name"]), "instances": instances})
    json_file = os.path.join(root, "coco", "annotations", f"instances_{split}.json")
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in thing_cats]
    _write_json(json_file, {"images": images, "annotations": annotations, "categories": categories})
    return {"root": str(root), "image_dir": image_dir, "json_file": json_file, "records": records, "scenes": scenes}


def write_coco_panoptic(root, split="val2017", scenes=None, semseg=True, write_images=True, categories=None):
    """<root>/coco/panoptic_<split>/*.png (RGB-encoded segment ids, spread over all three
    channels), coco/annotations/panoptic_<split>.json (133 categories, or ``categories``) and, with
    ``semseg``, coco/panoptic_semseg_<split>/*.png (contiguous ids 0..132, 255 void). records[i]:
    "segments" ({"id", "category_id" contiguous, "isthing", "iscrowd", "mask"}) and "semantic" (uint8 [H, W])."""
    categories = _coco_categories(categories)
    scenes = coco_scenes() if scenes is None else scenes
    contiguous = {c["id"]: i for i, c in enumerate(categories)}
    isthing = {c["id"]: bool(c["isthing"]) for c in categories}
    image_dir, images = _coco_images(root, split, scenes, write_images)
    panoptic_root = os.path.join(root, "coco", f"panoptic_{split}")
    semseg_root = os.path.join(root, "coco", f"panoptic_semseg_{split}")
    os.makedirs(panoptic_root, exist_ok=True)
    if semseg:
        os.makedirs(semseg_root, exist_ok=True)
    annotations, records = [], []
    for n, (image, scene) in enumerate(zip(images, scenes)):
        ids = np.zeros(scene.shape, dtype=np.int64)
        semantic = np.full(scene.shape, 255, dtype=np.uint8)
        segments_info, segments = [], []
        for k, seg in enumerate(scene.segments):
            segment_id = 1 + k * 70001 + n * 7  # large ids use the G and B channels too
            ids[seg.mask] = segment_id
            semantic[seg.mask] = contiguous[seg.category_id]
            segments_info.append(
                {
                    "id": segment_id,
                    "category_id": seg.category_id,
                    "iscrowd": int(seg.iscrowd),
                    "area": int(seg.mask.sum()),
                    "bbox": _bbox_xywh(seg.mask),
                }
            )
            segments.append(
                {
                    "id": segment_id,
                    "category_id": contiguous[seg.category_id],
                    "isthing": isthing[seg.category_id],
                    "iscrowd": int(seg.iscrowd),
                    "mask": seg.mask,
                }
            )
        png = image["file_name"].replace(".jpg", ".png")
        Image.fromarray(id2rgb(ids)).save(os.path.join(panoptic_root, png))  # id = R + 256 G + 256^2 B
        if semseg:
            Image.fromarray(semantic).save(os.path.join(semseg_root, png))
        annotations.append({"image_id": image["id"], "file_name": png, "segments_info": segments_info})
        records.append(
            {
                "image_id": image["id"],
                "file_name": os.path.join(image_dir, image["file_name"]),
                "pan_seg_file_name": os.path.join(panoptic_root, png),
                "segments": segments,
                "semantic": semantic,
            }
        )
    panoptic_json = os.path.join(root, "coco", "annotations", f"panoptic_{split}.json")
    categories = [
        {"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": c["color"], "supercategory": "none"}
        for c in categories
    ]
    _write_json(panoptic_json, {"images": images, "annotations": annotations, "categories": categories})
    return {
        "root": str(root),
        "image_dir": image_dir,
        "panoptic_json": panoptic_json,
        "panoptic_root": panoptic_root,
        "semseg_root": semseg_root if semseg else None,
        "records": records,
        "scenes": scenes,
    }


def write_coco(root, split="val2017", scenes=None, semseg=True):
    """Both COCO writers over the same scenes: {"instances": ..., "panoptic": ...}."""
    scenes = coco_scenes() if scenes is None else scenes
    return {
        "instances": write_coco_instances(root, split, scenes),
        "panoptic": write_coco_panoptic(root, split, scenes, semseg=semseg, write_images=False),
    }


# ------------------------------------------------------------------------ your own data (datasets file)

CUSTOM_CATEGORIES = [
    {"id": 1, "name": "brick", "isthing": 1, "color": [200, 60, 40]},
    {"id": 2, "name": "wheel", "isthing": 1, "color": [40, 40, 160]},
    {"id": 3, "name": "floor", "isthing": 0, "color": [150, 120, 90]},
    {"id": 4, "name": "wall", "isthing": 0, "color": [220, 220, 200]},
]
CUSTOM_CLASSES = [c["name"] for c in CUSTOM_CATEGORIES]


def custom_scenes(num_images=2, size=(48, 64), seed=0):
    """Wall above floor, two bricks and a wheel (CUSTOM_CATEGORIES), a void band."""
    return [make_scene(*size, stuff=(4, 3), things=(1, 2, 1), seed=seed + i) for i in range(num_images)]


def write_sem_seg(root, split, scenes, categories=CUSTOM_CATEGORIES, ignore_label=255):
    """<root>/sem_seg/<split>/images/<stem>.jpg and labels/<stem>.png (mode L: the index of the
    segment's category in ``categories``, ``ignore_label`` where void). records[i]: "file_name",
    "sem_seg_file_name", "semantic" (uint8 [H, W])."""
    contiguous = {c["id"]: i for i, c in enumerate(categories)}
    base = os.path.join(root, "sem_seg", split)
    image_dir, label_dir = os.path.join(base, "images"), os.path.join(base, "labels")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    records = []
    for i, scene in enumerate(scenes):
        stem = f"{split}_{i:04d}"
        semantic = np.full(scene.shape, ignore_label, dtype=np.uint8)
        for seg in scene.segments:
            semantic[seg.mask] = contiguous[seg.category_id]
        file_name, label = os.path.join(image_dir, stem + ".jpg"), os.path.join(label_dir, stem + ".png")
        Image.fromarray(scene.image).save(file_name, quality=100, subsampling=0)
        Image.fromarray(semantic).save(label)
        records.append({"file_name": file_name, "sem_seg_file_name": label, "semantic": semantic})
    return {"root": str(root), "image_dir": image_dir, "label_dir": label_dir, "records": records, "scenes": scenes}


def write_custom_datasets(root, splits=("train", "val"), num_images=2, size=(48, 64), categories=CUSTOM_CATEGORIES):
    """Each split in the three formats of a datasets file (coco_instances, coco_panoptic without
    semantic PNGs, sem_seg) under ``root``, and ``root``/datasets.yaml registering them as
    <format>_<split> with paths relative to it. Returns {"yaml": path, (format, split): what the writer returned}."""
    written, lines = {}, []
    for k, split in enumerate(splits):
        scenes = custom_scenes(num_images, size, seed=10 * k)
        written["coco_instances", split] = w = write_coco_instances(root, split, scenes, categories=categories)
        lines.append(f"coco_instances_{split}: {{format: coco_instances, json: {os.path.relpath(w['json_file'], root)}, "
                     f"images: {os.path.relpath(w['image_dir'], root)}}}")
        written["coco_panoptic", split] = w = write_coco_panoptic(root, split, scenes, semseg=False, write_images=False,
                                                                   categories=categories)
        lines.append(f"coco_panoptic_{split}: {{format: coco_panoptic, json: {os.path.relpath(w['panoptic_json'], root)}, "
                     f"panoptic: {os.path.relpath(w['panoptic_root'], root)}, images: {os.path.relpath(w['image_dir'], root)}}}")
        written["sem_seg", split] = w = write_sem_seg(root, split, scenes, categories)
        lines.append(f"sem_seg_{split}: {{format: sem_seg, images: {os.path.relpath(w['image_dir'], root)}, "
                     f"labels: {os.path.relpath(w['label_dir'], root)}, classes: [{', '.join(c['name'] for c in categories)}]}}")
    written["yaml"] = os.path.join(root, "datasets.yaml")
    with open(written["yaml"], "w") as f:
        f.write("\n".join(lines) + "\n")
    return written


# -------------------------------------------------------------------------------------- ADE20K

_ADE_SPLIT_DIRS = {"train": "training", "val": "validation"}


def ade20k_scenes(num_images=2, size=(48, 64), seed=0):
    """Wall and floor (stuff), two persons and a bed (things with instance annotations), and a
    chair labelled in the semantic annotation only (``iscrowd=1``: no instance annotation)."""
    return [
        make_scene(*size, stuff=(1, 4), things=(13, 8, 13), crowd=20, seed=seed + i)
        for i in range(num_images)
    ]


def write_ade20k(root, split="val", scenes=None, prepare=True):
    """<root>/ADEChallengeData2016/images/<dir>/ADE_<split>_%08d.jpg, annotations/<dir>/*.png
    (0 void, 1..150) and annotations_instance/<dir>/*.png (R = instance class 1..100, G = instance
    index, B = 0) for the thing segments with ``iscrowd == 0``; segments' category ids are ADE20K
    labels 1..150. With ``prepare``, also runs the project's three conversions (the prepare
    scripts) on the split.

    records[i]: "semantic" (contiguous 0..149, 255 void), "panoptic" (expected segments
    {"category_id", "isthing", "mask"}: stuff classes merged, one per instance, semantic-only
    things void) and "instances" ({"category_id" (0-based semantic id), "mask"})."""
    from mask2former_dinat.data.datasets.ade20k_categories import ADE20K_THING_IDS

    scenes = ade20k_scenes() if scenes is None else scenes
    dirname = _ADE_SPLIT_DIRS[split]
    base = os.path.join(root, "ADEChallengeData2016")
    dirs = {k: os.path.join(base, k, dirname) for k in ("images", "annotations", "annotations_instance")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    things = set(ADE20K_THING_IDS)
    records = []
    for i, scene in enumerate(scenes):
        stem = f"ADE_{split}_{i + 1:08d}"
        raw = np.zeros(scene.shape, dtype=np.uint8)
        inst = np.zeros(scene.shape + (3,), dtype=np.uint8)
        instances, panoptic = [], []
        for seg in scene.segments:
            raw[seg.mask] = seg.category_id
            category = seg.category_id - 1
            if category in things and not seg.iscrowd:
                inst[seg.mask, 0] = ADE20K_THING_IDS.index(category) + 1
                inst[seg.mask, 1] = len(instances) + 1
                instances.append({"category_id": category, "mask": seg.mask})
                panoptic.append({"category_id": category, "isthing": True, "mask": seg.mask})
        semantic = (raw - np.uint8(1)).astype(np.uint8)
        for category in np.unique(semantic):
            if category != 255 and category not in things:
                panoptic.append({"category_id": int(category), "isthing": False, "mask": semantic == category})
        Image.fromarray(scene.image).save(os.path.join(dirs["images"], stem + ".jpg"), quality=100, subsampling=0)
        Image.fromarray(raw).save(os.path.join(dirs["annotations"], stem + ".png"))
        Image.fromarray(inst).save(os.path.join(dirs["annotations_instance"], stem + ".png"))
        records.append(
            {
                "stem": stem,
                "file_name": os.path.join(dirs["images"], stem + ".jpg"),
                "semantic": semantic,
                "panoptic": panoptic,
                "instances": instances,
            }
        )
    if prepare:
        from mask2former_dinat.data.prepare.ade20k_instance import convert_ade20k_instances
        from mask2former_dinat.data.prepare.ade20k_panoptic import convert_ade20k_panoptic
        from mask2former_dinat.data.prepare.ade20k_sem_seg import convert_ade20k_sem_seg

        convert_ade20k_sem_seg(base, [split], workers=1)
        convert_ade20k_panoptic(base, [split], workers=1)
        convert_ade20k_instances(base, [split], workers=1)
    return {"root": str(root), "dataset_dir": base, "dirs": dirs, "records": records, "scenes": scenes}


# ---------------------------------------------------------------------------------- Cityscapes


def cityscapes_scenes(num_images=2, size=(32, 64), seed=0):
    """Sky and road, a person and two cars, a crowd of cars ("cargroup"), an unlabelled band."""
    return [
        make_scene(*size, stuff=(23, 7), things=(24, 26, 26), crowd=26, seed=seed + i)
        for i in range(num_images)
    ]


def _cityscapes_polygon(mask):
    """Bounding rectangle with inclusive integer corners, as Cityscapes' polygons are drawn."""
    x, y, w, h = _bbox_xywh(mask)
    return [[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]]


def write_cityscapes(root, split="val", scenes=None, city="frankfurt", panoptic=True):
    """<root>/cityscapes/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png and
    gtFine/<split>/<city>/<stem>_gtFine_{labelIds,instanceIds,labelTrainIds}.png + _polygons.json
    (instanceIds: label id for stuff and crowds, label id * 1000 + k for instances, 0 void); with
    ``panoptic``, gtFine/cityscapes_panoptic_<split>[.json] made by cityscapesscripts'
    createPanopticImgs. Segments' category ids are Cityscapes label ids.

    records[i]: "semantic" (trainIds, 255 void), "instances" ({"category_id" (0..7 among the 8
    thing classes), "mask", "iscrowd"}), "panoptic" ({"category_id" (trainId), "iscrowd", "mask"})."""
    from cityscapesscripts.helpers.labels import id2label, labels

    scenes = cityscapes_scenes() if scenes is None else scenes
    thing_ids = [l.id for l in labels if l.hasInstances and not l.ignoreInEval]
    image_dir = os.path.join(root, "cityscapes", "leftImg8bit", split, city)
    gt_dir = os.path.join(root, "cityscapes", "gtFine", split, city)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    records = []
    for i, scene in enumerate(scenes):
        stem = f"{city}_000000_{i:06d}"
        label_ids = np.zeros(scene.shape, dtype=np.uint8)
        instance_ids = np.zeros(scene.shape, dtype=np.int32)
        train_ids = np.full(scene.shape, 255, dtype=np.uint8)
        objects, instances, pan = [], [], []
        counts = {}
        for seg in scene.segments:
            label = id2label[seg.category_id]
            label_ids[seg.mask] = label.id
            train_ids[seg.mask] = label.trainId
            if label.hasInstances and not seg.iscrowd:
                value = label.id * 1000 + counts.get(label.id, 0)
                counts[label.id] = counts.get(label.id, 0) + 1
            else:
                value = label.id
            instance_ids[seg.mask] = value
            name = label.name + ("group" if label.hasInstances and seg.iscrowd else "")
            objects.append({"label": name, "polygon": _cityscapes_polygon(seg.mask)})
            if label.id in thing_ids:
                instances.append({"category_id": thing_ids.index(label.id), "mask": seg.mask, "iscrowd": seg.iscrowd})
            pan.append({"category_id": label.trainId, "iscrowd": int(label.hasInstances and bool(seg.iscrowd)), "mask": seg.mask})
        void = label_ids == 0
        if void.any():
            objects.append({"label": "unlabeled", "polygon": _cityscapes_polygon(void)})
        Image.fromarray(scene.image).save(os.path.join(image_dir, stem + "_leftImg8bit.png"))
        Image.fromarray(label_ids).save(os.path.join(gt_dir, stem + "_gtFine_labelIds.png"))
        # 16-bit grey PNG, as Cityscapes ships them (Pillow >= 13 no longer writes mode "I" PNGs)
        assert instance_ids.max() < 2**16
        cv2.imwrite(os.path.join(gt_dir, stem + "_gtFine_instanceIds.png"), instance_ids.astype(np.uint16))
        Image.fromarray(train_ids).save(os.path.join(gt_dir, stem + "_gtFine_labelTrainIds.png"))
        _write_json(
            os.path.join(gt_dir, stem + "_gtFine_polygons.json"),
            {"imgHeight": int(scene.shape[0]), "imgWidth": int(scene.shape[1]), "objects": objects},
        )
        records.append(
            {
                "stem": stem,
                "file_name": os.path.join(image_dir, stem + "_leftImg8bit.png"),
                "semantic": train_ids,
                "instances": instances,
                "panoptic": pan,
            }
        )
    gt_root = os.path.join(root, "cityscapes", "gtFine")
    if panoptic:
        from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

        with contextlib.redirect_stdout(io.StringIO()):
            convert2panoptic(cityscapesPath=gt_root, outputFolder=gt_root, setNames=[split])
    return {"root": str(root), "image_dir": image_dir, "gt_dir": gt_dir, "records": records, "scenes": scenes}


# -------------------------------------------------------------------------------- registration


@contextlib.contextmanager
def use_datasets_root(root):
    """Within the block, DETECTRON2_DATASETS=root and the project's datasets are registered
    under it; afterwards both are restored."""
    from mask2former_dinat.data.datasets import register_all_datasets

    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = str(root)
    try:
        register_all_datasets()
        yield str(root)
    finally:
        if old is None:
            os.environ.pop("DETECTRON2_DATASETS", None)
        else:
            os.environ["DETECTRON2_DATASETS"] = old
        register_all_datasets()



def registered_datasets(tmp_path_factory, write):
    """The body of a module-scoped registered-dataset fixture (`yield from` it): `write(root)`
    writes the small datasets into a fresh datasets root; while the fixture is alive
    DETECTRON2_DATASETS points there and the project's datasets are registered under it
    (use_datasets_root). Yields what `write` returned."""
    root = tmp_path_factory.mktemp("datasets")
    written = write(root)
    with use_datasets_root(root):
        yield written


def records_by_file(written):
    """A writer's records by image file name (the key evaluators' dataset dicts are matched on)."""
    return {os.path.basename(r["file_name"]): r for r in written["records"]}


def datasets_env(root, **more):
    """os.environ for a subprocess that reads its datasets from `root` (DETECTRON2_DATASETS), plus `more`."""
    return dict(os.environ, DETECTRON2_DATASETS=str(root), **more)

DATASETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "datasets")

# Runs each script as __main__ (cwd = datasets/, where a user runs them) and
# marks the end of each run, with its exit code, on stdout and stderr.
_RUNNER = """
import runpy, sys
for i, (script, *argv) in enumerate({runs!r}):
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        print(f"<<<run {{i}} exit {{code}}>>>", file=stream, flush=True)
"""


def run_prepare_scripts(*runs):
    """Run datasets/<script> with arguments as ``python <script> args...`` would, all in one
    subprocess (one interpreter start). ``runs``: (script file name, arg, ...) tuples.
    Returns [(exit code, stdout, stderr)] per run."""
    runs = [(os.path.join(DATASETS_DIR, script), *map(str, argv)) for script, *argv in runs]
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER.format(runs=runs)], capture_output=True, text=True, cwd=DATASETS_DIR
    )
    marker = re.compile(r"<<<run \d+ exit (-?\d+)>>>\n")
    outs, errs = marker.split(proc.stdout), marker.split(proc.stderr)
    if proc.returncode != 0 or len(outs) != 2 * len(runs) + 1:
        raise RuntimeError(f"running the prepare scripts failed:\n{proc.stderr}")
    return [(int(outs[2 * i + 1]), outs[2 * i], errs[2 * i]) for i in range(len(runs))]
