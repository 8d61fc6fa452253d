"""Checkpoints: weights from a path or URL, a download cache, weights-only loading, key reports.

- `download`: MODEL.WEIGHTS as an http(s) URL, downloaded once into `default_cache_dir()`
  (env M2F_DINAT_CACHE, else $XDG_CACHE_HOME/mask2former_dinat, else ~/.cache/mask2former_dinat),
  through a `.partial` file that is continued after a cut and checked (size, `#sha256=`);
- `restricted_load`: `.pth` read weights-only, `.pkl` through an unpickler that admits only
  numpy arrays (env M2F_DINAT_ALLOW_PICKLE=1 opts in to full unpickling of trusted files); a
  truncated or corrupt file is a CorruptCheckpointError naming it;
- `key_report`: the missing, unexpected and shape-mismatched keys, grouped by prefix;
- `checkpointer`: `Mask2FormerCheckpointer`, detectron2's DetectionCheckpointer with all of the above,
  resuming from the newest readable checkpoint;
- `atomic_write`: a file appears whole or not at all (checkpoints, converted backbones).
"""
from .atomic_write import atomic_write
from .checkpointer import Mask2FormerCheckpointer
from .download import (
    CACHE_ENV,
    TIMEOUT_ENV,
    CheckpointDownloadError,
    cache_path_for_url,
    cached_download,
    default_cache_dir,
    resolve_weights_path,
)
from .key_report import (
    CheckpointKeyReport,
    CheckpointMismatchError,
    PretrainingLoad,
    compare_state_dicts,
    group_keys,
)
from .restricted_load import (
    ALLOW_PICKLE_ENV,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_file,
    pickle_allowed_by_env,
)

__all__ = [
    "ALLOW_PICKLE_ENV",
    "CACHE_ENV",
    "CheckpointDownloadError",
    "CheckpointKeyReport",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "Mask2FormerCheckpointer",
    "PretrainingLoad",
    "TIMEOUT_ENV",
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
