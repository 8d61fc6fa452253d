"""Reading one image, label PNG or panoptic PNG for the data check: fully decoded (a truncated
file fails here, not in training), returning what the check compares or why it cannot be read."""
import os

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from ..prepare.parallel_map import parallel_map

__all__ = ["inspect_file", "inspect_files"]

_EXIF_ORIENTATION = 274
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that detectron2's read_image turns by 90 degrees


def inspect_file(job):
    """job: (path, what) with what "image", "label" or "panoptic". Returns a dict: "error" (a
    problem kind) and "detail" when it cannot be used; else "size" (width, height as detectron2
    reads it), and "values" (sorted label values or segment ids present, int64) for labels and
    panoptic PNGs, with "counts" (pixels per value) for labels."""
    path, what = job
    if not os.path.isfile(path):
        return {"error": "missing image" if what == "image" else "missing label", "detail": "the file does not exist"}
    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
            if what == "image":
                if im.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED:
                    size = size[::-1]
                return {"size": size}
            mode = im.mode
            if what == "panoptic":
                values = np.unique(rgb2id(np.asarray(im.convert("RGB"), dtype=np.uint32)))
                return {"size": size, "values": values}
            if mode not in ("L", "P", "I;16", "I", "1"):
                return {"error": "unreadable label",
                        "detail": f"mode {mode} ({len(im.getbands())} channels): a label PNG holds one class id per pixel (mode L, P or I;16)"}
            values, counts = np.unique(np.asarray(im), return_counts=True)
            return {"size": size, "values": values.astype(np.int64), "counts": counts}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return {"error": "unreadable image" if what == "image" else "unreadable label", "detail": str(e) or type(e).__name__}


def inspect_files(jobs, workers=None):
    """inspect_file over many (path, what) jobs, in worker processes when there are many."""
    jobs = list(jobs)
    return parallel_map(inspect_file, jobs, workers if workers is not None else (1 if len(jobs) < 200 else None))
