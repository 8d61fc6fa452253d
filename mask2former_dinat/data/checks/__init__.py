"""The data check of datasets registered from a datasets file (``train_net.py --check-data``, and
before training): counts, and every problem with the file and entry that has it (report.py);
``skip_bad`` re-registers the training datasets without the images that have problems."""
import logging
from typing import Iterable, List

from detectron2.data import MetadataCatalog

from ..datasets.custom_formats import exclude_images
from .coco_formats import check_coco_instances, check_coco_panoptic
from .report import PROBLEM_KINDS, DatasetReport, Problem, format_reports
from .sem_seg import check_sem_seg

__all__ = ["PROBLEM_KINDS", "DatasetReport", "Problem", "check_dataset", "check_datasets", "format_reports", "skip_bad"]

_CHECKS = {"coco_instances": check_coco_instances, "coco_panoptic": check_coco_panoptic, "sem_seg": check_sem_seg}


def check_dataset(name: str) -> DatasetReport:
    """Check one dataset registered from a datasets file."""
    meta = MetadataCatalog.get(name)
    fmt = meta.get("dataset_format")
    if fmt is None:
        raise ValueError(f"dataset {name!r} was not registered from a datasets file; only those are checked")
    source = meta.get("panoptic_json") or meta.get("json_file") if fmt != "sem_seg" else meta.sem_seg_root
    return _CHECKS[fmt](DatasetReport(name, fmt, source), meta)


def check_datasets(names: Iterable[str]) -> List[DatasetReport]:
    return [check_dataset(n) for n in dict.fromkeys(names)]


def skip_bad(name: str, images: Iterable[str], total: int) -> str:
    """Re-register ``name`` without ``images``; returns the log line that counts them."""
    images = sorted(images)
    exclude_images(name, images)
    line = (f"--skip-bad: leaving out {len(images)} of the {total} images of dataset {name!r} "
            f"(problems found by the data check): {', '.join(images[:5])}{' ...' if len(images) > 5 else ''}")
    logging.getLogger(__name__).warning(line)
    return line
