"""The embedded default dataset: small synthetic panoptic scenes in COCO panoptic format.

Used by the main job (`make demo`) and by tests, so that training, evaluation and
the demo run with no download. A scene is 2-3 textured bands of "stuff" (sky,
grass, water, sand) with 1-4 "things" (circle, square, triangle) on top; a thing's
class is its shape, its colour is random, so the model has to learn shapes.

On disk, per split (`<root>/<split>/`), exactly what COCO panoptic + Mask2Former's
semantic conversion produce:
  images/<id>.jpg, panoptic/<id>.png (RGB-encoded segment ids: id = R + 256 G + 256^2 B),
  panoptic.json (images, annotations with segments_info, categories),
  sem_seg/<id>.png (contiguous class ids, 255 = void), instances.json (COCO instances, RLE).
Registered as `synthetic_panoptic_{train,val}` under $DETECTRON2_DATASETS/synthetic
(data/datasets/register_synthetic.py).
"""
import json
import math
from pathlib import Path

import cv2
import numpy as np
from panopticapi.utils import id2rgb
from pycocotools import mask as mask_util

CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 142, 255]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [255, 200, 0]},
    {"id": 4, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 5, "name": "grass", "isthing": 0, "color": [50, 160, 50]},
    {"id": 6, "name": "water", "isthing": 0, "color": [30, 60, 150]},
    {"id": 7, "name": "sand", "isthing": 0, "color": [210, 180, 120]},
]
THING_IDS = [c["id"] for c in CATEGORIES if c["isthing"]]
STUFF_IDS = [c["id"] for c in CATEGORIES if not c["isthing"]]
_FORMAT_VERSION = 2  # 2: shapes rasterised with numpy


def _texture(rng, category_id, height, width):
    """A recognisable texture per stuff class: base colour + class-specific pattern + noise."""
    base = np.array(CATEGORIES[category_id - 1]["color"], np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    pattern = {
        4: 0.15 * (yy / max(height, 1)),                          # sky: vertical gradient
        5: 0.20 * np.sin(xx * 0.9 + phase) * np.sin(yy * 0.7),   # grass: fine checker
        6: 0.20 * np.sin(yy * 0.5 + 0.3 * np.sin(xx * 0.2) + phase),  # water: waves
        7: 0.10 * rng.standard_normal((height, width)),           # sand: grain
    }[category_id]
    img = base[None, None, :] * (1.0 + pattern[..., None])
    img += rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255)


def _shape_mask(rng, shape, height, width):
    """bool [H, W] of one thing, rasterised with numpy at pixel centres (OpenCV's polygon
    filling differs between its releases; this does not, so the dataset is the same everywhere)."""
    size = int(rng.integers(max(8, min(height, width) // 6), max(10, min(height, width) // 3)))
    cy = int(rng.integers(size // 2 + 1, height - size // 2 - 1))
    cx = int(rng.integers(size // 2 + 1, width - size // 2 - 1))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dx * dx + dy * dy <= (size // 2) ** 2
    if shape == "square":
        angle = math.radians(rng.uniform(0, 90))
        c, s = math.cos(angle), math.sin(angle)
        half = size / 2
        return (np.abs(dx * c + dy * s) <= half) & (np.abs(dy * c - dx * s) <= half)
    angle = rng.uniform(0, 2 * math.pi)
    corners = [(cx + size / 1.7 * math.cos(angle + k * 2 * math.pi / 3),
                cy + size / 1.7 * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    # inside a triangle: on the same side of all three edges
    sides = [(x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
             for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1])]
    return ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | ((sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))


def render_scene(rng, height, width, max_things=4, min_things=1):
    """One scene. Returns (image uint8 [H, W, 3] RGB, segment ids int32 [H, W], segments list
    of {"id", "category_id"}), ids starting at 1 in painting order."""
    image = np.zeros((height, width, 3), np.float32)
    ids = np.zeros((height, width), np.int32)
    segments = []
    n_bands = int(rng.integers(2, 4))
    stuff = rng.choice(STUFF_IDS, size=n_bands, replace=False)
    cuts = np.sort(rng.choice(np.arange(height // 5, height - height // 5), size=n_bands - 1, replace=False))
    bounds = [0, *cuts.tolist(), height]
    for cat, (top, bottom) in zip(stuff, zip(bounds[:-1], bounds[1:])):
        image[top:bottom] = _texture(rng, int(cat), bottom - top, width)
        segments.append({"id": len(segments) + 1, "category_id": int(cat)})
        ids[top:bottom] = segments[-1]["id"]
    for _ in range(int(rng.integers(min_things, max_things + 1))):
        cat = int(rng.choice(THING_IDS))
        mask = _shape_mask(rng, CATEGORIES[cat - 1]["name"], height, width)
        colour = rng.uniform(40, 255, 3)
        image[mask] = colour + rng.normal(0, 4, (int(mask.sum()), 3))
        segments.append({"id": len(segments) + 1, "category_id": cat})
        ids[mask] = segments[-1]["id"]
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present]  # fully covered segments vanish
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments


def write_split(split_dir, num_images, height, width, seed):
    """Writes one split (see the module docstring). Returns the panoptic JSON dict."""
    split_dir = Path(split_dir)
    for sub in ("images", "panoptic", "sem_seg"):
        (split_dir / sub).mkdir(parents=True, exist_ok=True)
    contiguous = {c["id"]: i for i, c in enumerate(CATEGORIES)}
    rng = np.random.default_rng(seed)
    images, annotations, instances = [], [], []
    for image_id in range(1, num_images + 1):
        image, ids, segments = render_scene(rng, height, width)
        name = f"{image_id:06d}"
        cv2.imwrite(str(split_dir / "images" / f"{name}.jpg"), image[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(split_dir / "panoptic" / f"{name}.png"), id2rgb(ids)[:, :, ::-1])
        sem = np.full((height, width), 255, np.uint8)
        segments_info = []
        for seg in segments:
            mask = ids == seg["id"]
            sem[mask] = contiguous[seg["category_id"]]
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            info = {"id": seg["id"], "category_id": seg["category_id"], "iscrowd": 0,
                    "area": int(mask_util.area(rle)), "bbox": [int(v) for v in mask_util.toBbox(rle)]}
            segments_info.append(info)
            if seg["category_id"] in THING_IDS:
                rle["counts"] = rle["counts"].decode("ascii")
                instances.append({"id": len(instances) + 1, "image_id": image_id,
                                  "category_id": seg["category_id"], "segmentation": rle,
                                  "area": info["area"], "bbox": info["bbox"], "iscrowd": 0})
        cv2.imwrite(str(split_dir / "sem_seg" / f"{name}.png"), sem)
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width})
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments_info})
    categories = [dict(c) for c in CATEGORIES]
    panoptic = {"images": images, "annotations": annotations, "categories": categories}
    (split_dir / "panoptic.json").write_text(json.dumps(panoptic))
    inst_categories = [{k: c[k] for k in ("id", "name")} for c in CATEGORIES if c["isthing"]]
    (split_dir / "instances.json").write_text(
        json.dumps({"images": images, "annotations": instances, "categories": inst_categories}))
    return panoptic


def generate(root, num_train=300, num_val=50, height=128, width=128, seed=0):
    """Writes train/ and val/ under root unless an identical dataset is already there."""
    root = Path(root)
    params = {"version": _FORMAT_VERSION, "num_train": num_train, "num_val": num_val,
              "height": height, "width": width, "seed": seed}
    stamp = root / "synthetic.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return root
    write_split(root / "train", num_train, height, width, seed)
    write_split(root / "val", num_val, height, width, seed + 1)
    stamp.write_text(json.dumps(params))
    return root


def write_video(path, num_frames=24, height=128, width=160, fps=8, seed=0):
    """A short clip of shapes moving over a fixed background (for the demo on video)."""
    rng = np.random.default_rng(seed)
    background, _, _ = render_scene(rng, height, width, max_things=0, min_things=0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write video to {path}")
    try:
        for t in range(num_frames):
            frame = background.copy()
            cx = int(20 + (width - 40) * t / max(num_frames - 1, 1))
            cv2.circle(frame, (cx, height // 3), 14, (230, 40, 40), -1)
            cv2.rectangle(frame, (width - cx - 12, 2 * height // 3 - 12), (width - cx + 12, 2 * height // 3 + 12),
                          (40, 40, 230), -1)
            writer.write(frame[:, :, ::-1])
    finally:
        writer.release()
    return path

