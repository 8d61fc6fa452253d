"""`Mask2FormerCheckpointer`: the DetectionCheckpointer that the Trainer, the demo and the tools use.

On top of detectron2's behaviour (the `{"model": state_dict, ...}` format, resume of optimizer /
scheduler / iteration, name matching for converted `.pkl` backbones) it takes MODEL.WEIGHTS as a
local path or an http(s) URL (`download`), reads files without running code from them
(`restricted_load`), recognises an ImageNet DiNAT classification checkpoint and converts it in
memory into the backbone (`mask2former_dinat.imagenet_pretraining`), reports the keys that do not
fit before loading (`key_report`; `strict=True` raises instead of loading part of a checkpoint,
and a checkpoint that shares no key with the model is always an error), writes checkpoints
atomically (`atomic_write`), and resumes from the newest readable checkpoint when the one
`last_checkpoint` names is truncated or corrupt.
"""
import dataclasses
import os
import re
from typing import Any, Dict, List, Mapping, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from fvcore.common.checkpoint import _filter_reused_missing_keys, _strip_prefix_if_present

from mask2former_dinat import imagenet_pretraining

from .atomic_write import atomic_write
from .download import resolve_weights_path
from .key_report import CheckpointKeyReport, CheckpointMismatchError, PretrainingLoad, compare_state_dicts
from .restricted_load import CorruptCheckpointError, load_checkpoint_file, pickle_allowed_by_env

__all__ = ["Mask2FormerCheckpointer"]

# atomic_write's temporary name for <name>.pth.
PARTIAL_SAVE = re.compile(r"\..+\.pth\.[0-9a-f]{8}\.tmp")


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

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """detectron2's resume_or_load; on resume, a truncated or corrupt latest checkpoint is
        skipped (with a warning naming it) for the newest complete one in save_dir."""
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        self._remove_partial_saves()
        latest = self.get_checkpoint_file()
        try:
            return self.load(latest)
        except (CorruptCheckpointError, FileNotFoundError) as e:
            error = e
        for candidate in self._older_checkpoints(latest):
            try:
                checkpoint = self.load(candidate)
            except (CorruptCheckpointError, FileNotFoundError):
                self.logger.warning(f"{candidate} is also unreadable; trying an older checkpoint.")
                continue
            self.logger.warning(
                f"Resuming from {candidate}, the newest complete checkpoint, because the latest one "
                f"is unreadable: {error}"
            )
            return checkpoint
        raise error

    def _remove_partial_saves(self) -> None:
        """Deletes the temporary files of saves that a killed run left (never loaded, but as large
        as a checkpoint each)."""
        if "://" in self.save_dir or not self.save_to_disk:
            return
        for name in os.listdir(self.save_dir):
            if PARTIAL_SAVE.fullmatch(name):
                os.unlink(os.path.join(self.save_dir, name))
                self.logger.info(f"Removed {name}, the partial file of an interrupted checkpoint save.")

    def _older_checkpoints(self, latest: str) -> List[str]:
        """The other checkpoint files (*.pth) of save_dir, newest first (by modification time)."""
        if "://" in self.save_dir:
            return []
        names = [n for n in os.listdir(self.save_dir) if n.endswith(".pth") and not n.startswith(".")]
        paths = [os.path.join(self.save_dir, n) for n in names]
        paths = [p for p in paths if os.path.isfile(p) and os.path.abspath(p) != os.path.abspath(latest)]
        return sorted(paths, key=os.path.getmtime, reverse=True)

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
            # Upstream detectron2's load records the URL it parses and clears it only when the load
            # succeeds; after a failed load (a corrupt file) its next load would fail an assert.
            if hasattr(self, "_parsed_url_during_load"):
                self._parsed_url_during_load = None

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
        elif report.accounted_for or report.only_classifier_differs:  # pre-training, or fine-tuning on other classes
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
