"""ADE20K ``annotations/<split>`` -> ``annotations_detectron2/<split>`` (labels shifted by one,
0 -> 255), what ``ade20k_sem_seg_*`` reads."""
import glob
import os

import numpy as np
from PIL import Image

from ..datasets.register_ade20k_semantic import ADE20K_SPLITS
from .ade20k_annotations import semantic_to_contiguous
from .parallel_map import parallel_map

__all__ = ["convert_ade20k_sem_seg"]


def _convert_one(job):
    src, dst = job
    with Image.open(src) as im:
        raw = np.asarray(im)
    Image.fromarray(semantic_to_contiguous(raw, src)).save(dst)


def convert_ade20k_sem_seg(dataset_dir, splits=tuple(ADE20K_SPLITS), workers=None):
    """dataset_dir: the ADEChallengeData2016 folder; splits: "train" and/or "val". Returns the
    number of files written per split."""
    written = {}
    for split in splits:
        dirname = ADE20K_SPLITS[split]
        src_dir = os.path.join(dataset_dir, "annotations", dirname)
        files = sorted(glob.glob(os.path.join(src_dir, "*.png")))
        if not files:
            raise FileNotFoundError(f"no ADE20K annotations (*.png) in {src_dir}")
        dst_dir = os.path.join(dataset_dir, "annotations_detectron2", dirname)
        os.makedirs(dst_dir, exist_ok=True)
        parallel_map(_convert_one, [(f, os.path.join(dst_dir, os.path.basename(f))) for f in files], workers)
        written[split] = len(files)
    return written
