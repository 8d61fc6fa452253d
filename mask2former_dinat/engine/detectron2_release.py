"""Which detectron2 runs: release 0.6 or a later upstream one, told apart by a feature probe.

Both report `__version__ == "0.6"`. The probe is a change made after the release: 0.6's COCO
evaluation takes `use_fast_impl=`, later upstream code takes `cocoeval_fn=`. Every workaround
for a gap of release 0.6 asks `is_release_0_6()` and steps aside when it says False.
"""
import functools
import inspect

__all__ = ["is_release_0_6"]


@functools.lru_cache(maxsize=None)
def is_release_0_6() -> bool:
    """True for detectron2 release 0.6 (PyPI's pb1-detectron2 included), False for later upstream code."""
    from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

    return "use_fast_impl" in inspect.signature(_evaluate_predictions_on_coco).parameters
