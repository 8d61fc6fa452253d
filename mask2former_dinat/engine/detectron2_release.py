"""Which detectron2 runs: release 0.6 or a later upstream one, told apart by a feature probe.

Both report `__version__ == "0.6"`. The probe is a change made after the release: 0.6's COCO
evaluation takes `use_fast_impl=`, later upstream code takes `cocoeval_fn=`. Every workaround
for a gap of release 0.6 asks `is_release_0_6()` and steps aside when it says False.

The other fact about an installed detectron2 is whether its C++ ops exist: the offline set-up
installs release 0.6 from PyPI's pb1-detectron2, which has no C++ sources, with a pure-Python
`detectron2._C` stand-in (tools/detectron2_offline_fallback.py) whose ops raise; Mask2Former
needs none of them. `compiled_ops()` tells the three cases apart.
"""
import functools
import inspect

__all__ = ["STUB_MARKER", "compiled_ops", "is_release_0_6"]

# The attribute tools/detectron2_offline_fallback.py sets on its `detectron2._C` stand-in.
STUB_MARKER = "MASK2FORMER_DINAT_STUB"


@functools.lru_cache(maxsize=None)
def is_release_0_6() -> bool:
    """True for detectron2 release 0.6 (PyPI's pb1-detectron2 included), False for later upstream code."""
    from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

    return "use_fast_impl" in inspect.signature(_evaluate_predictions_on_coco).parameters


def compiled_ops():
    """("compiled", path of the extension) | ("stand-in", path) for the offline 0.6 install |
    ("missing", the import error)."""
    try:
        from detectron2 import _C
    except ImportError as e:
        return "missing", str(e)
    return ("stand-in" if getattr(_C, STUB_MARKER, False) else "compiled"), _C.__file__
