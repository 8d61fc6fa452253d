"""Reading checkpoint files without running code from them.

`.pth` files go through `torch.load(weights_only=True)` (tensors, containers, numbers, strings
and plain numpy arrays only); `.pkl` files through an unpickler that admits only numpy arrays.
Files that need more unpickling are refused unless the caller opts in (`allow_pickle=True` or
env M2F_DINAT_ALLOW_PICKLE=1).
"""
import codecs
import collections
import contextlib
import importlib
import os
import pickle
import re
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import torch

__all__ = [
    "ALLOW_PICKLE_ENV",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "pickle_allowed_by_env",
]

ALLOW_PICKLE_ENV = "M2F_DINAT_ALLOW_PICKLE"


class CorruptCheckpointError(ValueError):
    """A checkpoint file cannot be read: truncated (e.g. a copy or download cut off) or corrupt."""

    def __init__(self, path: str, kind: str, cause: BaseException):
        self.path = path
        super().__init__(
            f"{path} is not a readable {kind} checkpoint ({cause}): the file is truncated or corrupt "
            f"({os.path.getsize(path) if os.path.exists(path) else 0} bytes). Download or copy it again; "
            "for a training checkpoint, `train_net.py --resume` falls back to the previous complete "
            "checkpoint in OUTPUT_DIR by itself."
        )


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds Python objects that only full unpickling (which can run code) would load."""


def pickle_allowed_by_env() -> bool:
    """Whether env M2F_DINAT_ALLOW_PICKLE opts in to full unpickling of trusted legacy checkpoints."""
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _opt_in_text() -> str:
    return (
        f"If you trust the file's source, opt in to full unpickling with {ALLOW_PICKLE_ENV}=1 "
        "(or Mask2FormerCheckpointer(..., allow_pickle=True))."
    )


def _numpy_core(name: str):
    try:  # numpy 2 pickles name numpy._core, numpy 1 names numpy.core
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{name}")


_multiarray, _numeric = _numpy_core("multiarray"), _numpy_core("numeric")
# Everything a pickled numpy array of numbers refers to (under numpy 1 and numpy 2 module names);
# none of it can run code. Pickle protocol 2 stores bytes through _codecs.encode.
_ARRAY_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ARRAY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _ARRAY_GLOBALS[(f"{_core}.multiarray", "scalar")] = _multiarray.scalar
    _ARRAY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _numeric._frombuffer


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers, numbers, strings and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return _ARRAY_GLOBALS[(module, name)]


def _torch_safe_numpy_globals() -> List[Any]:
    """The numpy objects `torch.load(weights_only=True)` may build: arrays and scalars of numbers."""
    dtype_classes = [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"]  # numbers only, no object arrays
    return list({id(o): o for o in list(_ARRAY_GLOBALS.values()) + dtype_classes}.values())


def _load_pkl(path: str, allow_pickle: bool) -> Any:
    with open(path, "rb") as f:
        if allow_pickle:
            return pickle.load(f, encoding="latin1")
        try:
            return _ArrayUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(
                f"Refusing to load {path}: a detectron2 .pkl checkpoint should hold only numpy arrays, "
                f"but this one refers to {e}, which only full unpickling can build, and full unpickling "
                f"can run arbitrary code. {_opt_in_text()}"
            ) from None
        except (EOFError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as e:
            raise CorruptCheckpointError(path, ".pkl", e) from None


# OSErrors about reaching the file, not its content (a torch file cut inside its zip directory
# raises a plain OSError "Invalid argument").
_ACCESS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError)


def _load_torch(path: str, allow_pickle: bool) -> Any:
    if allow_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError, OSError) as e:
            if isinstance(e, _ACCESS_ERRORS):
                raise
            raise CorruptCheckpointError(path, "PyTorch", e) from None
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    scope = safe_globals(_torch_safe_numpy_globals()) if safe_globals else contextlib.nullcontext()
    try:
        with scope:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "Weights only load failed" not in message:
            raise CorruptCheckpointError(path, "PyTorch", e) from None
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.?\s*Please use|\n|$)", message)
        what = found.group(1).strip() if found else message.splitlines()[0]
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it holds Python objects besides tensors and plain data ({what}), "
            f"and only full unpickling, which can run arbitrary code, would build them. {_opt_in_text()}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        if isinstance(e, _ACCESS_ERRORS):
            raise
        raise CorruptCheckpointError(path, "PyTorch", e) from None


def load_checkpoint_file(path: str, *, allow_pickle: bool = False) -> Dict[str, Any]:
    """Read a local checkpoint into detectron2's layout `{"model": weights, ...other entries}`.

    `.pkl`: detectron2 / converted backbone files (`{"model": {name: ndarray}, ...}`, kept as they
    are, `matching_heuristics` included) or Caffe2 blobs (renamed by detectron2's heuristics).
    Anything else: a torch file; a bare state dict is wrapped as `{"model": state_dict}`, and
    `{"state_dict": weights, ...}` becomes `{"model": weights, ...}`.
    Without `allow_pickle` only tensors, numpy arrays and plain data are unpickled.
    """
    if path.endswith(".pkl"):
        data = _load_pkl(path, allow_pickle)
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds a {type(data).__name__}, not a checkpoint dict.")
        if "model" in data:
            return data
        # Caffe2 / Detectron1 model zoo: bare blobs (detection models nest them under "blobs")
        blobs = data.get("blobs", data)
        blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}

    data = _load_torch(path, allow_pickle)
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path} holds a {type(data).__name__}, not a state dict or a checkpoint dict with a 'model' entry."
        )
    if "model" in data:
        return dict(data)
    if isinstance(data.get("state_dict"), Mapping):  # {"state_dict": weights, ...} (e.g. timm, Lightning)
        rest = {k: v for k, v in data.items() if k != "state_dict"}
        return {"model": data["state_dict"], **rest}
    return {"model": data}
