"""The evaluation data loader: a test image that is missing or cannot be read is named, and with
`skip_bad` (train_net.py --skip-bad) evaluation goes on without it and counts it.

Missing files are found before evaluation starts (one stat per image), so a typo or an
incomplete copy fails at once rather than after an hour; an image that exists but cannot be
decoded is found when its turn comes. Without `skip_bad` either stops with UnreadableImageError
naming the file(s). With it, inference leaves them out and the log says which and how many.
Evaluators that score only the images they are shown (semantic segmentation: mIoU) then
measure the remaining images exactly; COCO-style evaluators read the ground truth of the whole
dataset from its json, so there a skipped image's objects count as missed (instance AP), and PQ
cannot be computed without every image (panopticapi stops, naming the image id).
"""
import logging
import os
from typing import Any, Dict, List

from detectron2.data import DatasetMapper, build_detection_test_loader, get_detection_dataset_dicts

__all__ = ["CheckedTestLoader", "UnreadableImageError", "build_checked_test_loader"]

logger = logging.getLogger(__name__)
_NAMED = 5


class UnreadableImageError(OSError):
    """Test images of a dataset are missing or cannot be read; the message names them."""


def _names(files: List[str]) -> str:
    more = f" and {len(files) - _NAMED} more" if len(files) > _NAMED else ""
    return ", ".join(files[:_NAMED]) + more


class _TolerantMapper:
    """The mapper, with an image that cannot be read mapped to {"unreadable": file, "error": why}
    (detectron2's MapDataset would replace a None by another, random image)."""

    def __init__(self, mapper, dataset_name: str, skip_bad: bool):
        self.mapper, self.dataset_name, self.skip_bad = mapper, dataset_name, skip_bad

    def __call__(self, dataset_dict: Dict[str, Any]):
        try:
            return self.mapper(dataset_dict)
        except (OSError, SyntaxError, ValueError) as e:  # PIL: OSError (UnidentifiedImageError), SyntaxError
            name = dataset_dict.get("file_name", "?")
            if not self.skip_bad:
                raise UnreadableImageError(
                    f"Test image {name} of dataset {self.dataset_name} cannot be read ({e.__class__.__name__}: {e}). "
                    "Replace or remove it, or pass --skip-bad to evaluate without it."
                ) from None
            return {"unreadable": name, "error": f"{e.__class__.__name__}: {e}"}


class CheckedTestLoader:
    """Batches (lists of one mapped dict) of the readable images; `skipped` lists the others."""

    def __init__(self, loader, dataset_name: str, missing: List[str], total: int):
        self.loader, self.dataset_name, self.total = loader, dataset_name, total
        self.skipped: List[str] = list(missing)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            kept = [d for d in batch if "unreadable" not in d]
            for d in batch:
                if "unreadable" in d:
                    logger.warning("Skipped test image %s: %s", d["unreadable"], d["error"])
                    self.skipped.append(d["unreadable"])
            if kept:
                yield kept
        if self.skipped:
            logger.warning(
                "Evaluation of %s left out %d of its %d images that could not be read (--skip-bad): %s",
                self.dataset_name, len(self.skipped), self.total, _names(self.skipped),
            )


def build_checked_test_loader(cfg, dataset_name: str, *, skip_bad: bool = False, mapper=None) -> CheckedTestLoader:
    """detectron2's test loader for `dataset_name` (batch size 1, InferenceSampler), checked as above."""
    dicts = get_detection_dataset_dicts([dataset_name], filter_empty=False)
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d.get("file_name", ""))]
    if missing and not skip_bad:
        raise UnreadableImageError(
            f"{len(missing)} of the {len(dicts)} test images of dataset {dataset_name} are missing: {_names(missing)}. "
            "Restore them (is $DETECTRON2_DATASETS the right folder?), or pass --skip-bad to evaluate without them."
        )
    if missing:
        logger.warning(
            "%d of the %d test images of %s are missing and left out (--skip-bad): %s",
            len(missing), len(dicts), dataset_name, _names(missing),
        )
        dicts = [d for d in dicts if d["file_name"] not in set(missing)]
    mapper = _TolerantMapper(mapper or DatasetMapper(cfg, False), dataset_name, skip_bad)
    loader = build_detection_test_loader(dataset=dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
    return CheckedTestLoader(loader, dataset_name, missing, len(dicts) + len(missing))
