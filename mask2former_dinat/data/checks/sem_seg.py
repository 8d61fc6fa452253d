"""The check of a sem_seg dataset: every image has a label PNG of its size that holds class ids
or the ignore label, and every class occurs."""
import os

import numpy as np

from ..datasets.custom_formats import sem_seg_pairs
from .files import inspect_files
from .report import DatasetReport

__all__ = ["check_sem_seg"]


def check_sem_seg(report: DatasetReport, meta) -> DatasetReport:
    classes, ignore = list(meta.stuff_classes), meta.ignore_label
    for folder, key in ((meta.image_root, "images"), (meta.sem_seg_root, "labels")):
        if not os.path.isdir(folder):
            report.add("bad file", folder, "", f"the '{key}' folder does not exist")
    if not report.ok:
        return report
    pairs, no_label, no_image = sem_seg_pairs(meta.image_root, meta.sem_seg_root)
    for image in no_label:
        report.add("missing label", image, "", f"no label {os.path.splitext(os.path.basename(image))[0]}.png in {meta.sem_seg_root}", image=image)
    for label in no_image:
        report.add("missing image", label, "", f"no image of the same name in {meta.image_root}", image=label)
    found = inspect_files([(p, what) for pair in pairs for p, what in zip(pair, ("image", "label"))])
    pixels = np.zeros(len(classes), dtype=np.int64)
    for k, (image, label) in enumerate(pairs):
        im, lb = found[2 * k], found[2 * k + 1]
        for path, f in ((image, im), (label, lb)):
            if "error" in f:
                report.add(f["error"], path, "", f["detail"], image=image)
        if "error" in im or "error" in lb:
            continue
        if tuple(lb["size"]) != tuple(im["size"]):
            report.add("label size", label, "", f"the label is {lb['size'][0]}x{lb['size'][1]}, "
                       f"its image {os.path.basename(image)} {im['size'][0]}x{im['size'][1]}", image=image)
        values, counts = lb["values"], lb["counts"]
        bad = (values >= len(classes)) & (values != ignore)
        if bad.any():
            report.add("class id above NUM_CLASSES", label, "",
                       f"values {values[bad].tolist()} ({int(counts[bad].sum())} pixels) are neither class ids "
                       f"0..{len(classes) - 1} of the {len(classes)} classes nor the ignore label {ignore}", image=image)
        ok = (values < len(classes)) & (values >= 0)
        np.add.at(pixels, values[ok], counts[ok])
    for i, name in enumerate(classes):
        if not pixels[i]:
            report.add("empty category", meta.sem_seg_root, f"class {i} {name!r}", "no label pixel has this class")
    report.counts = {"images": len(pairs) + len(no_label), "label PNGs": len(pairs) + len(no_image), "categories": len(classes)}
    return report
