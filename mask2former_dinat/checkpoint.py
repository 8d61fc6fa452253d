"""Checkpoints: weights from a path or URL, a download cache, weights-only loading, key reports.

`Mask2FormerCheckpointer` is the DetectionCheckpointer that train_net.py, the demo and the
tools use. On top of detectron2's behaviour (the `{"model": state_dict, ...}` format, resume
of optimizer / scheduler / iteration, name matching for converted `.pkl` backbones) it:

- takes MODEL.WEIGHTS as a local path or an http(s) URL; a URL is downloaded once into
  `default_cache_dir()` (env M2F_DINAT_CACHE, else $XDG_CACHE_HOME/mask2former_dinat, else
  ~/.cache/mask2former_dinat), mirrored as `<cache>/<host>/<url path>`, and later loads use
  that file without touching the network;
- reads `.pth` files with `torch.load(weights_only=True)` (tensors, containers, numbers,
  strings and plain numpy arrays only) and `.pkl` files with an unpickler that admits only
  numpy arrays: loading never runs code from the file. Files that need more unpickling
  are refused unless the caller opts in (`allow_pickle=True` or env M2F_DINAT_ALLOW_PICKLE=1);
- recognises an ImageNet DiNAT classification checkpoint (`dinat_large_in22k_224*.pth` as
  distributed: a bare state dict, or under "model" / "state_dict", optionally "module."-prefixed),
  converts it in memory (mask2former_dinat.imagenet_pretraining) and loads it into the backbone;
  so does the converter's .pkl. Its report says what was loaded, that the classifier and its
  final norm were left out, and which parts start from initialisation. A kernel size that does
  not fit the model, or another DiNAT variant, is refused and nothing is loaded;
- compares the checkpoint with the model before loading and reports, grouped by prefix, the
  missing, unexpected and shape-mismatched keys (logged at WARNING, kept as `last_report`).
  `strict=True` (for evaluating published weights) raises with that report instead of
  loading part of a checkpoint; a checkpoint that shares no key with the model is always an error;
- writes checkpoints atomically (a temporary file in the same folder, then `os.replace`).
"""
import codecs
import collections
import contextlib
import dataclasses
import hashlib
import importlib
import http.client
import logging
import os
import pickle
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from fvcore.common.checkpoint import _filter_reused_missing_keys, _strip_prefix_if_present

from mask2former_dinat import imagenet_pretraining

__all__ = [
    "ALLOW_PICKLE_ENV",
    "CACHE_ENV",
    "CheckpointDownloadError",
    "CheckpointKeyReport",
    "CheckpointMismatchError",
    "Mask2FormerCheckpointer",
    "PretrainingLoad",
    "UnsafeCheckpointError",
    "atomic_write",
    "cache_path_for_url",
    "cached_download",
    "compare_state_dicts",
    "default_cache_dir",
    "group_keys",
    "load_checkpoint_file",
    "pickle_allowed_by_env",
    "resolve_weights_path",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "M2F_DINAT_CACHE"
ALLOW_PICKLE_ENV = "M2F_DINAT_ALLOW_PICKLE"
_HTTP_TIMEOUT_S = 60
_CHUNK = 1 << 20


class CheckpointDownloadError(OSError):
    """A checkpoint URL could not be downloaded completely; nothing was written to the cache."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds Python objects that only full unpickling (which can run code) would load."""


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model; `.report` says which keys."""

    def __init__(self, message: str, report: "CheckpointKeyReport"):
        super().__init__(message)
        self.report = report


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, the download cache, path resolution
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Open a temporary file beside `path`; on a clean exit it replaces `path`, on an error it is deleted.

    Readers never see a partial file under `path`. The temporary name starts with "." and ends
    in ".tmp", so checkpoint listings (`*.pth`) ignore it.
    """
    path = os.path.abspath(path)
    directory, base = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like open()
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_cache_dir() -> str:
    """Where downloaded checkpoints live: $M2F_DINAT_CACHE, else $XDG_CACHE_HOME/mask2former_dinat,
    else ~/.cache/mask2former_dinat."""
    if os.environ.get(CACHE_ENV):
        return os.path.expanduser(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "mask2former_dinat")


def _is_url(path: str) -> bool:
    return urllib.parse.urlsplit(path).scheme.lower() in ("http", "https")


def cache_path_for_url(url: str, cache_dir: Optional[str] = None) -> str:
    """The cache file for `url`: `<cache_dir>/<host>/<url path>` (a query string adds a hash to the name).

    A file put there by hand (e.g. copied from a machine with network) is used as is.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/")]
    segments = [re.sub(r"[\\/:*?\"<>|]", "_", s) for s in segments if s not in ("", ".", "..")]
    if not segments or parts.path.endswith("/"):
        raise ValueError(f"URL {url!r} does not name a file; MODEL.WEIGHTS must point at a checkpoint file.")
    if parts.query:
        stem, ext = os.path.splitext(segments[-1])
        segments[-1] = f"{stem}-{hashlib.sha256(parts.query.encode()).hexdigest()[:10]}{ext}"
    host = (parts.hostname or "unknown-host") + (f"_{parts.port}" if parts.port else "")
    return os.path.join(cache_dir or default_cache_dir(), host, *segments)


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive advisory lock, so that processes on one machine download a URL only once."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): concurrent downloads stay correct, only wasteful
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cached_download(url: str, cache_dir: Optional[str] = None, *, progress: Optional[bool] = None) -> str:
    """Download `url` into the cache once and return the local file; later calls make no request.

    progress: show a tqdm bar (None: only on a terminal).
    Raises CheckpointDownloadError (naming the URL and the HTTP status) when the download fails
    or stops early; the cache then holds no file under the final name.
    """
    target = cache_path_for_url(url, cache_dir)
    if os.path.isfile(target):
        return target
    with _file_lock(target + ".lock"):
        if not os.path.isfile(target):  # another process may have finished it while we waited
            _download(url, target, progress)
    return target


def _download(url: str, target: str, progress: Optional[bool]) -> None:
    from tqdm import tqdm

    advice = (
        f"Check the URL, or fetch the file another way and put it at {target} (the download cache), "
        "or set MODEL.WEIGHTS to a local file."
    )
    request = urllib.request.Request(url, headers={"User-Agent": "mask2former_dinat"})
    try:
        response = urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise CheckpointDownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. {advice}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise CheckpointDownloadError(f"Could not reach {url}: {reason}. {advice}") from e

    logger.info("Downloading %s to %s", url, target)
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with atomic_write(target) as f, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024,
            desc=os.path.basename(target), disable=None if progress is None else not progress,
        ) as bar:
            received = 0
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, cut chunked encoding
                    raise CheckpointDownloadError(
                        f"Download of {url} failed after {received} bytes ({e}); nothing was saved. Try again."
                    ) from e
                if not chunk:
                    break
                if received == 0 and chunk.lstrip()[:1] == b"<":
                    raise CheckpointDownloadError(f"{url} returned a web page (HTML/XML), not a checkpoint file. {advice}")
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            if total is not None and received != total:
                raise CheckpointDownloadError(
                    f"Download of {url} stopped after {received} of {total} bytes; nothing was saved. Try again."
                )


def resolve_weights_path(path: str, *, cache_dir: Optional[str] = None, path_manager=None) -> str:
    """A local file for MODEL.WEIGHTS: an existing path as is, an http(s) URL via the download
    cache, another `scheme://` through detectron2's PathManager (e.g. detectron2://)."""
    expanded = os.path.expanduser(path)
    if os.path.isfile(expanded):
        return expanded
    if _is_url(path):
        return cached_download(path, cache_dir)
    if "://" in path and path_manager is not None:
        return path_manager.get_local_path(path)
    if os.path.isdir(expanded):
        raise IsADirectoryError(f"Checkpoint path {path!r} is a folder; MODEL.WEIGHTS must name a checkpoint file.")
    raise FileNotFoundError(
        f"Checkpoint file not found: {path!r}. MODEL.WEIGHTS must be an existing local file or an http(s) URL."
    )


# ---------------------------------------------------------------------------------------------
# Reading checkpoint files without running code from them
# ---------------------------------------------------------------------------------------------


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
        except (EOFError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a readable .pkl checkpoint ({e}); it may be truncated or corrupt.") from e


def _load_torch(path: str, allow_pickle: bool) -> Any:
    if allow_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    scope = safe_globals(_torch_safe_numpy_globals()) if safe_globals else contextlib.nullcontext()
    try:
        with scope:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "Weights only load failed" not in message:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint ({e}); it may be truncated or corrupt.") from e
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.?\s*Please use|\n|$)", message)
        what = found.group(1).strip() if found else message.splitlines()[0]
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it holds Python objects besides tensors and plain data ({what}), "
            f"and only full unpickling, which can run arbitrary code, would build them. {_opt_in_text()}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({e}); it may be truncated or corrupt.") from e


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


# ---------------------------------------------------------------------------------------------
# Key reports
# ---------------------------------------------------------------------------------------------


def _natural_key(text: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text) if t]


def _render_choices(choices: Iterable[str]) -> str:
    choices = sorted(choices, key=_natural_key)
    if len(choices) == 1:
        return choices[0]
    if all(c.isdigit() for c in choices):
        numbers, runs = sorted(int(c) for c in choices), []
        start = prev = numbers[0]
        for n in numbers[1:] + [None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            runs.append(f"{start}..{prev}" if prev - start >= 2 else ",".join(map(str, range(start, prev + 1))))
            if n is not None:
                start = prev = n
        return "{" + ",".join(runs) + "}"
    return "{" + ",".join(choices) + "}"


def group_keys(keys: Iterable[str]) -> List[str]:
    """Compress dotted key names into exact patterns, e.g. 'backbone.levels.2.blocks.{3..17}.attn.rpb'.

    Keys that differ in one dotted component merge (repeatedly), so every pattern stands for
    exactly the keys it expands to. Patterns are ordered by the first key each one covers.
    """
    by_length: Dict[int, List[Tuple[frozenset, ...]]] = {}
    for key in set(keys):
        parts = tuple(frozenset([p]) for p in key.split("."))
        by_length.setdefault(len(parts), []).append(parts)
    patterns = []
    for length, entries in by_length.items():
        changed = True
        while changed:
            changed = False
            for pos in reversed(range(length)):
                merged: Dict[Tuple[frozenset, ...], set] = {}
                for e in entries:
                    merged.setdefault(e[:pos] + e[pos + 1:], set()).update(e[pos])
                if len(merged) < len(entries):
                    changed = True
                    entries = [rest[:pos] + (frozenset(c),) + rest[pos:] for rest, c in merged.items()]
        patterns += entries
    # order by the first key each pattern covers
    patterns.sort(key=lambda e: [_natural_key(min(p, key=_natural_key)) for p in e])
    return [".".join(_render_choices(p) for p in e) for e in patterns]


def _summarize_keys(keys: Sequence[str], max_groups: int) -> List[str]:
    """group_keys(keys) if that gives at most `max_groups` patterns, else the deepest module
    prefixes ("a.b.*") that do; else the exact patterns (the caller truncates them)."""
    exact = group_keys(keys)
    if len(exact) <= max_groups:
        return exact
    best = None
    for depth in range(1, max(k.count(".") for k in keys) + 1):
        prefixes = {k if k.count(".") < depth else ".".join(k.split(".")[:depth]) + ".*" for k in keys}
        grouped = group_keys(prefixes)
        if len(grouped) > max_groups:
            break
        best = grouped
    return best or exact


Shape = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class PretrainingLoad:
    """How an ImageNet classification checkpoint became the model's backbone weights.

    kernel_size: of the weights loaded; backbone_prefix: where they went in the model
    ("backbone." in a Mask2Former, "" for a bare D2DiNAT); loaded_into: patterns of those keys;
    classifier: the left-out classifier and final norm (checkpoint names); unknown: left-out
    names that are no DiNAT weights; resized_from: the kernel size the converter resized the
    relative position biases from (None: not resized); how: "converted in memory" or the
    converted file's origin.
    """

    kernel_size: int
    backbone_prefix: str
    loaded_into: Tuple[str, ...]
    classifier: Tuple[str, ...]
    unknown: Tuple[str, ...] = ()
    resized_from: Optional[int] = None
    how: str = "converted in memory"

    @property
    def left_out(self) -> Tuple[str, ...]:
        return self.classifier + self.unknown


def _model_parts(backbone_prefix: str) -> Tuple[Tuple[str, "re.Pattern", bool], ...]:
    """(name, key pattern, list the keys exactly) of the parts that a backbone pre-training leaves to initialisation."""
    return (
        ("the backbone's per-level output norms", re.compile(re.escape(backbone_prefix) + r"norm\d+\."), True),
        ("the pixel decoder", re.compile(r"sem_seg_head\.pixel_decoder\."), False),
        ("the transformer decoder", re.compile(r"sem_seg_head\.predictor\."), False),
        ("the criterion's class weights, set from the config", re.compile(r"criterion\."), True),
    )


@dataclasses.dataclass(frozen=True)
class CheckpointKeyReport:
    """How a checkpoint's weights fit a model.

    missing: model keys the checkpoint does not provide; unexpected: checkpoint keys the model
    does not have; shape_mismatches: (key, shape in checkpoint, shape in model), not loaded;
    loaded: how many model keys received a checkpoint value; pretraining: set when the
    checkpoint was an ImageNet classification checkpoint loaded into the backbone.
    """

    source: str
    missing: Tuple[str, ...]
    unexpected: Tuple[str, ...]
    shape_mismatches: Tuple[Tuple[str, Shape, Shape], ...]
    loaded: int
    model_keys: int
    config: Optional[str] = None
    pretraining: Optional[PretrainingLoad] = None

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def initialised_parts(self) -> List[Tuple[str, List[str]]]:
        """The missing keys of a pre-training load by model part: (part, key patterns); keys of no
        known part come last under "other keys"."""
        if self.pretraining is None:
            return [("other keys", _summarize_keys(self.missing, 8))] if self.missing else []
        parts, rest = [], list(self.missing)
        for name, pattern, exact in _model_parts(self.pretraining.backbone_prefix):
            keys = [k for k in rest if pattern.match(k)]
            if keys:
                rest = [k for k in rest if not pattern.match(k)]
                shown = group_keys(keys) if exact else [pattern.pattern.replace("\\", "") + "*"]
                parts.append((f"{name} ({len(keys)})", shown))
        if rest:
            parts.append((f"other keys ({len(rest)})", _summarize_keys(rest, 8)))
        return parts

    @property
    def accounted_for(self) -> bool:
        """A pre-training load in which every model key outside the backbone's tensors belongs to a
        part that starts from initialisation, and every checkpoint tensor was loaded or left out by design."""
        return (
            self.pretraining is not None
            and not (self.unexpected or self.shape_mismatches or self.pretraining.unknown)
            and all(not name.startswith("other keys") for name, _ in self.initialised_parts())
        )

    def headline(self) -> str:
        target = f"the model built from config {self.config}" if self.config else "the model"
        if self.pretraining is not None:
            p = self.pretraining
            total = self.loaded + len(self.unexpected) + len(self.shape_mismatches) + len(p.left_out)
            resized = f", relative position biases resized from kernel size {p.resized_from}" if p.resized_from else ""
            return (
                f"Checkpoint {self.source} is an ImageNet DiNAT classification checkpoint (kernel size "
                f"{p.kernel_size}{resized}), {p.how}: {self.loaded} of its {total} tensors loaded into the "
                f"backbone of {target}."
            )
        if self.fits:
            return f"Checkpoint {self.source} fits {target}: all {self.model_keys} keys loaded."
        counts = [
            text.format(n=len(v), s="" if len(v) == 1 else "s")
            for text, v in (("{n} missing key{s}", self.missing), ("{n} unexpected key{s}", self.unexpected),
                            ("{n} key{s} with another shape", self.shape_mismatches))
            if v
        ]
        return (
            f"Checkpoint {self.source} does not fit {target}: {', '.join(counts)}; "
            f"{self.loaded} of {self.model_keys} model keys have checkpoint values."
        )

    def hints(self) -> List[str]:
        """Likely causes, read from the shapes and names of the mismatched keys."""
        hints = []
        for key, ckpt, model in self.shape_mismatches:
            if key.endswith("attn.rpb") and len(ckpt) == len(model) == 3:
                hints.append(
                    f"relative position bias of kernel size {(ckpt[-1] + 1) // 2} in the checkpoint but "
                    f"{(model[-1] + 1) // 2} in the model (MODEL.DINAT.KERNEL_SIZE)"
                )
                break
        for key, ckpt, model in self.shape_mismatches:
            if key.endswith("class_embed.weight"):
                hints.append(
                    f"{ckpt[0] - 1} classes in the checkpoint but {model[0] - 1} in the model "
                    "(MODEL.SEM_SEG_HEAD.NUM_CLASSES): the checkpoint was trained on another dataset or task"
                )
                break
        for key, ckpt, model in self.shape_mismatches:
            if key.endswith(("query_feat.weight", "query_embed.weight")):
                hints.append(
                    f"{ckpt[0]} object queries in the checkpoint but {model[0]} in the model "
                    "(MODEL.MASK_FORMER.NUM_OBJECT_QUERIES)"
                )
                break
        if self.pretraining is not None:  # the format lists where every key went
            return hints
        missing = set(self.missing)
        if self.unexpected and sum(f"backbone.{k}" in missing for k in self.unexpected) * 2 >= len(self.unexpected):
            hints.append(
                "the checkpoint's keys are backbone keys without the 'backbone.' prefix: a backbone-only "
                "checkpoint must first be converted with tools/convert-pretrained-dinat-model-to-d2.py (to .pkl)"
            )
        if self.missing and not (self.unexpected or self.shape_mismatches) and all(
            not k.startswith("backbone.") for k in self.missing
        ):
            hints.append(
                "only the backbone was loaded: expected when training starts from a backbone pre-training, "
                "wrong when evaluating (MODEL.WEIGHTS should then be a full Mask2Former checkpoint)"
            )
        elif (self.missing or self.unexpected) and self.config:
            hints.append(f"a published checkpoint loads only under the config it was trained with; check {self.config}")
        return hints

    def format(self, max_groups: int = 8) -> str:
        """The report as a few lines: key patterns (at most `max_groups` per kind) and hints.

        When the exact patterns are too many, keys are summarised by their longest common module
        prefixes ("backbone.levels.{0..3}.blocks.*": some keys under each of these).
        """
        lines = [self.headline()]

        def add(kind: str, patterns: List[str], count: Optional[int], indent: str = "  "):
            shown = patterns[:max_groups]
            more = f" ... and {len(patterns) - len(shown)} more group(s)" if len(patterns) > len(shown) else ""
            lines.append(f"{indent}{kind}{'' if count is None else f' ({count})'}: " + "; ".join(shown) + more)

        p = self.pretraining
        if p is not None:
            add("loaded", list(p.loaded_into), self.loaded)
            if p.resized_from:
                lines.append(
                    f"  relative position biases: resized from kernel size {p.resized_from} to {p.kernel_size} "
                    "by the converter (bicubic, align_corners=False)"
                )
            if p.classifier:
                add(f"left out ({len(p.classifier)}): the classifier and its final norm, which the model has no "
                    "counterpart for", group_keys(p.classifier), None)
            if p.unknown:
                add(f"left out ({len(p.unknown)}): names that are no DiNAT weights",
                    _summarize_keys(p.unknown, max_groups), None)
            if self.missing:
                lines.append(f"  start from initialisation ({len(self.missing)} of the model's {self.model_keys} keys):")
                for part, patterns in self.initialised_parts():
                    add(part, patterns, None, indent="    ")
        elif self.missing:
            add("missing in checkpoint", _summarize_keys(self.missing, max_groups), len(self.missing))
        if self.unexpected:
            add("not in model", _summarize_keys(self.unexpected, max_groups), len(self.unexpected))
        if self.shape_mismatches:
            by_shapes: Dict[Tuple[Shape, Shape], List[str]] = {}
            for key, ckpt, model in self.shape_mismatches:
                by_shapes.setdefault((tuple(ckpt), tuple(model)), []).append(key)
            patterns = sorted(
                (f"{p} (checkpoint {list(c)}, model {list(m)})" for (c, m), ks in by_shapes.items() for p in group_keys(ks)),
                key=_natural_key,
            )
            add("shape differs, not loaded", patterns, len(self.shape_mismatches))
        lines += [f"  hint: {h}" for h in self.hints()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def compare_state_dicts(
    model_state: Mapping[str, Any],
    checkpoint_state: Mapping[str, Any],
    *,
    source: str = "<state dict>",
    config: Optional[str] = None,
) -> CheckpointKeyReport:
    """What loading `checkpoint_state` into a model with `model_state` would load and leave out."""
    mismatches = tuple(
        (k, tuple(v.shape), tuple(model_state[k].shape))
        for k, v in checkpoint_state.items()
        if k in model_state
        and not isinstance(model_state[k], torch.nn.parameter.UninitializedParameter)
        and tuple(v.shape) != tuple(model_state[k].shape)
    )
    missing = tuple(sorted(k for k in model_state if k not in checkpoint_state))
    unexpected = tuple(sorted(k for k in checkpoint_state if k not in model_state))
    loaded = sum(1 for k in model_state if k in checkpoint_state) - len(mismatches)
    return CheckpointKeyReport(source, missing, unexpected, mismatches, loaded, len(model_state), config)


# ---------------------------------------------------------------------------------------------
# The checkpointer
# ---------------------------------------------------------------------------------------------


class Mask2FormerCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with URL caching, weights-only loading, key reports and atomic saves.

    Args (beyond DetectionCheckpointer's model, save_dir, save_to_disk, **checkpointables):
        strict: raise CheckpointMismatchError (loading nothing) when the checkpoint does not fit
            the model exactly; use it to evaluate published weights. Off for training from a
            backbone pre-training, whose head keys are missing by design.
        allow_pickle: permit full unpickling of trusted legacy files; None reads env
            M2F_DINAT_ALLOW_PICKLE.
        config_name: the config file the model was built from, named in reports.
        cache_dir: download cache (default `default_cache_dir()`).
    After `load()` / `resume_or_load()`, `last_report` holds the CheckpointKeyReport.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        strict: bool = False,
        allow_pickle: Optional[bool] = None,
        config_name: Optional[str] = None,
        cache_dir: Optional[str] = None,
        **checkpointables: Any,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self.allow_pickle = pickle_allowed_by_env() if allow_pickle is None else allow_pickle
        self.config_name = config_name
        self.cache_dir = cache_dir
        self.last_report: Optional[CheckpointKeyReport] = None
        self._source: Optional[str] = None

    # -- loading ---------------------------------------------------------------------------

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Load weights (and the named checkpointables) from a local path or an http(s) URL."""
        self.last_report = None
        if not path:
            return super().load(path, checkpointables=checkpointables)
        local = resolve_weights_path(path, cache_dir=self.cache_dir, path_manager=self.path_manager)
        self._source = path
        try:
            return super().load(local, checkpointables=checkpointables)
        finally:
            self._source = None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        return load_checkpoint_file(filename, allow_pickle=self.allow_pickle)

    def _load_model(self, checkpoint: Dict[str, Any]):
        source = self._source or "<checkpoint>"
        state = checkpoint.get("model")
        if not isinstance(state, Mapping):
            raise ValueError(f"{source}: the checkpoint's 'model' entry is a {type(state).__name__}, not a state dict.")
        self._convert_ndarray_to_tensor(state)
        _strip_prefix_if_present(state, "module.")
        model_state = self.model.state_dict()
        pretraining = self._as_pretraining(checkpoint, state, model_state, source)
        if pretraining is not None:
            return self._load_pretraining(checkpoint, *pretraining, model_state, source)
        if checkpoint.pop("matching_heuristics", False):
            report, state = self._align_by_suffix(model_state, state, checkpoint.get("__author__") == "Caffe2", source)
        else:
            report = compare_state_dicts(model_state, state, source=source, config=self.config_name)
        report = self._drop_tolerated_missing(report)
        self.last_report = report

        if report.loaded == 0 and model_state:
            raise CheckpointMismatchError(
                f"{report.format()}\nNone of the checkpoint's {len(state)} keys fits the model; nothing was loaded.",
                report,
            )
        if self.strict and not report.fits:
            raise CheckpointMismatchError(f"{report.format()}\nStrict loading: nothing was loaded.", report)
        checkpoint["model"] = state
        return super()._load_model(checkpoint)

    def _target(self) -> str:
        return f"the model built from config {self.config_name}" if self.config_name else "the model"

    def _as_pretraining(self, checkpoint, state, model_state, source):
        """(backbone weights under the model's names, PretrainingLoad) when the checkpoint is an ImageNet
        DiNAT classifier (a .pth, any layout) or the converter's .pkl of one; else None."""
        converted = checkpoint.pop(imagenet_pretraining.CONVERTED_KEY, None)
        if not (isinstance(converted, Mapping) or imagenet_pretraining.is_classification_state(state)):
            return None
        anchor = "patch_embed.proj.0.weight"
        prefixes = [p for p in ("backbone.", "") if p + anchor in model_state]
        if not prefixes:
            raise ValueError(
                f"{source} is an ImageNet DiNAT classification checkpoint, but {self._target()} has no DiNAT "
                "backbone (no 'backbone.patch_embed.*' keys): set MODEL.BACKBONE.NAME to D2DiNAT."
            )
        prefix = prefixes[0]
        rpb = next((k for k in model_state if k.startswith(prefix + "levels.") and k.endswith(".attn.rpb")), None)
        kernel_size = (model_state[rpb].shape[-1] + 1) // 2 if rpb is not None else None
        target = f"{self._target()} (MODEL.DINAT.KERNEL_SIZE)"
        if isinstance(converted, Mapping):  # the converter's .pkl: D2DiNAT names, classifier already left out
            if kernel_size is not None:
                imagenet_pretraining.check_kernel_size(state, kernel_size, source=source, target=target)
            checkpoint.pop("matching_heuristics", None)
            backbone = state
            info = dict(
                kernel_size=kernel_size or imagenet_pretraining.kernel_size_of(state, source),
                classifier=tuple(str(k) for k in converted.get("classifier", ())),
                unknown=tuple(str(k) for k in converted.get("unknown", ())),
                resized_from=converted.get("resized_from"),
                how=f"converted by {imagenet_pretraining.CONVERTER}"
                + (f" from {converted['source']}" if converted.get("source") else ""),
            )
        else:
            conversion = imagenet_pretraining.convert(state, kernel_size=kernel_size, source=source, target=target)
            backbone = conversion.backbone
            info = dict(kernel_size=conversion.kernel_size, classifier=conversion.classifier, unknown=conversion.unknown)
        loaded_into = tuple(dict.fromkeys(f"{prefix}{k.split('.')[0]}.*" for k in backbone))
        info = PretrainingLoad(backbone_prefix=prefix, loaded_into=loaded_into, **info)
        return {prefix + k: v for k, v in backbone.items()}, info

    def _load_pretraining(self, checkpoint, state, info, model_state, source):
        report = compare_state_dicts(model_state, state, source=source, config=self.config_name)
        report = self._drop_tolerated_missing(dataclasses.replace(report, pretraining=info))
        self.last_report = report
        if report.unexpected or report.shape_mismatches:
            raise CheckpointMismatchError(
                f"{report.format()}\nThe pre-training does not fit the backbone of {self._target()} "
                "(another DiNAT variant?); nothing was loaded.",
                report,
            )
        if self.strict:
            raise CheckpointMismatchError(
                f"{report.format()}\nStrict loading: an ImageNet pre-training is where training starts, not a model "
                "to evaluate (MODEL.WEIGHTS should be a full Mask2Former checkpoint); nothing was loaded.",
                report,
            )
        checkpoint.pop("matching_heuristics", None)
        checkpoint["model"] = state
        return super()._load_model(checkpoint)

    def _align_by_suffix(self, model_state, ckpt_state, c2_conversion: bool, source: str):
        """detectron2's name matching (checkpoint names as suffixes of model names), reported.

        detectron2 returns the matched entries under model names and the rest under their own
        names; a checkpoint key it skipped because the model key it matches has another shape
        is reported as a shape mismatch of that model key.
        """
        aligned = align_and_update_state_dicts(model_state, ckpt_state, c2_conversion=c2_conversion)
        report = compare_state_dicts(model_state, aligned, source=source, config=self.config_name)
        missing, unexpected = list(report.missing), list(report.unexpected)
        mismatches = list(report.shape_mismatches)
        for k in report.unexpected:
            candidates = [m for m in missing if m.endswith("." + k)]
            if len(candidates) == 1 and tuple(model_state[candidates[0]].shape) != tuple(aligned[k].shape):
                mismatches.append((candidates[0], tuple(aligned[k].shape), tuple(model_state[candidates[0]].shape)))
                unexpected.remove(k)
                missing.remove(candidates[0])
        return dataclasses.replace(
            report, missing=tuple(missing), unexpected=tuple(unexpected), shape_mismatches=tuple(mismatches)
        ), aligned

    def _drop_tolerated_missing(self, report: CheckpointKeyReport) -> CheckpointKeyReport:
        # Keys tied to another loaded name, and detectron2's pixel_mean/pixel_std buffers (set from
        # the config), are not missing in any sense that matters.
        missing = set(_filter_reused_missing_keys(self.model, list(report.missing))) if report.missing else set()
        buffers = dict(self.model.named_buffers(recurse=False))
        missing -= {k for k in ("pixel_mean", "pixel_std") if k in buffers}
        return dataclasses.replace(report, missing=tuple(sorted(missing)))

    def _log_incompatible_keys(self, incompatible) -> None:
        report = self.last_report
        if report is None:
            return
        if report.fits:
            self.logger.info(report.headline())
        elif report.accounted_for:  # a backbone pre-training: the report says where every tensor went
            self.logger.info(report.format())
        else:
            self.logger.warning(report.format())

    # -- saving ----------------------------------------------------------------------------

    def save(self, name: str, **kwargs: Any) -> None:
        """Write `<save_dir>/<name>.pth` (model, checkpointables, kwargs) atomically, then tag it as last."""
        if not self.save_dir or not self.save_to_disk:
            return
        if "://" in self.save_dir:  # a remote PathManager folder: no local atomic rename
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"checkpoint name {name!r} must be a plain file name")
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_write(save_file) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if "://" in self.save_dir:
            return super().tag_last_checkpoint(last_filename_basename)
        with atomic_write(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)
