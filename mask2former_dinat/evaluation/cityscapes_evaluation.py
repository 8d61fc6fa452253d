"""detectron2's Cityscapes instance evaluator, kept from littering the working directory.

cityscapesscripts' instance evaluation writes its intermediate `matches.json` into the
current directory, unconditionally. We run it inside the evaluator's own temporary folder,
with its JSON writes made numpy-2-safe (mask2former_dinat/compat/cityscapesscripts_numpy2.py).
"""
import contextlib
import os

from detectron2.evaluation import CityscapesInstanceEvaluator as _D2CityscapesInstanceEvaluator

from ..compat.cityscapesscripts_numpy2 import json_safe_writes


@contextlib.contextmanager
def _working_directory(path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class CityscapesInstanceEvaluator(_D2CityscapesInstanceEvaluator):
    """Same results as detectron2's; cityscapesscripts' scratch files stay in a temporary folder."""

    def evaluate(self):
        with _working_directory(self._temp_dir), json_safe_writes():
            return super().evaluate()
