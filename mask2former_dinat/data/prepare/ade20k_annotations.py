"""Reading ADE20K scene-parsing annotations.

- semantic ``annotations/<split>/<stem>.png``: uint8, 0 = other/void, 1..150 = classes;
- instance ``annotations_instance/<split>/<stem>.png``: RGB, R = instance class 1..100
  (0 = none), G = instance index within the image (0 = no instance).
"""
import glob
import os

import numpy as np
from PIL import Image

from ..datasets.ade20k_categories import ADE20K_THING_IDS

__all__ = ["semantic_to_contiguous", "read_instance_png", "thing_instances", "image_stems"]


def semantic_to_contiguous(raw, source="<array>"):
    """raw ADE20K labels (0..150) -> contiguous ids (0..149) with 255 for 0 ("other")."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(f"{source}: expected a single-channel uint8 label image, got {raw.dtype} of shape {raw.shape}")
    if raw.max(initial=0) > 150:
        raise ValueError(f"{source}: label {raw.max()} is outside ADE20K's 0..150")
    return (raw - np.uint8(1)).astype(np.uint8)  # uint8 wrap-around sends 0 to 255


def read_instance_png(path):
    """(instance class [H, W] int, instance index [H, W] int) of an annotations_instance PNG."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return arr[..., 0].astype(np.int64), arr[..., 1].astype(np.int64)


def thing_instances(instance_class, instance_index, source="<array>"):
    """[(mask bool [H, W], 0-based semantic category id)] for each instance index > 0, in
    increasing index order. Every pixel of an instance must carry the same class 1..100."""
    out = []
    for index in np.unique(instance_index):
        if index == 0:
            continue
        mask = instance_index == index
        classes = np.unique(instance_class[mask])
        if len(classes) != 1 or not 1 <= classes[0] <= len(ADE20K_THING_IDS):
            raise ValueError(f"{source}: instance {index} has instance classes {classes.tolist()}; expected one of 1..100")
        out.append((mask, ADE20K_THING_IDS[classes[0] - 1]))
    return out


def image_stems(image_dir):
    """Sorted file stems of the *.jpg images in ``image_dir``."""
    files = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    if not files:
        raise FileNotFoundError(f"no *.jpg images in {image_dir}")
    return [os.path.splitext(os.path.basename(f))[0] for f in files]
