"""cityscapesscripts' JSON writes made numpy-safe for the duration of an evaluation only."""
import json

import numpy as np
import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as instance_eval

from mask2former_dinat.compat.cityscapesscripts_numpy2 import json_safe_writes


class _Record:
    def __init__(self):
        self.label = "car"


def test_numpy_scalars_and_arrays_are_written_as_numbers_and_objects_by_their_fields(tmp_path):
    original = instance_eval.writeDict2JSON
    data = {"count": np.int64(3), "area": np.float32(0.5), "ids": np.arange(2), "obj": _Record(), "plain": 1}
    with json_safe_writes():
        instance_eval.writeDict2JSON(data, tmp_path / "m.json")
    assert instance_eval.writeDict2JSON is original
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "count": 3, "area": 0.5, "ids": [0, 1], "obj": {"label": "car"}, "plain": 1}
