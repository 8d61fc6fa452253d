"""cityscapesscripts 2.3.0 (the newest) writes its intermediate results with
`json.dumps(..., default=lambda o: o.__dict__)`; under numpy 2 those results hold numpy scalars,
which have no __dict__, so its instance evaluation fails with "'numpy.int64' object has no
attribute '__dict__'". `json_safe_writes()` lets numpy scalars and arrays through as numbers and
lists while cityscapesscripts evaluates; everything else is written as it was.
"""
import contextlib
import importlib
import json

import numpy as np

_EVALUATION_MODULES = (
    "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
)


def _default(o):
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    return o.__dict__


def write_dict_to_json(dict_name, file_name):
    """cityscapesscripts.helpers.csHelpers.writeDict2JSON, numpy-aware."""
    with open(file_name, "w") as f:
        f.write(json.dumps(dict_name, default=_default, sort_keys=True, indent=4))


@contextlib.contextmanager
def json_safe_writes():
    """Inside the block, cityscapesscripts' evaluation scripts write JSON with write_dict_to_json."""
    modules = [importlib.import_module(name) for name in _EVALUATION_MODULES]
    saved = [m.writeDict2JSON for m in modules]
    for m in modules:
        m.writeDict2JSON = write_dict_to_json
    try:
        yield
    finally:
        for m, original in zip(modules, saved):
            m.writeDict2JSON = original
