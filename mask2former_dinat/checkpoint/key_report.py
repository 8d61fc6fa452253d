"""Key reports: how a checkpoint's weights fit a model, grouped into short key patterns.

`compare_state_dicts` lists the missing, unexpected and shape-mismatched keys; the report
formats them grouped by prefix (e.g. 'backbone.levels.2.blocks.{3..17}.attn.rpb'), with the
likely causes read from the shapes and names.
"""
import dataclasses
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = [
    "CheckpointKeyReport",
    "CheckpointMismatchError",
    "PretrainingLoad",
    "compare_state_dicts",
    "group_keys",
]


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

    @property
    def only_classifier_differs(self) -> bool:
        """Everything loads but the classifier (class_embed) and the criterion's per-class weights:
        a model of another class count, fine-tuned from this checkpoint."""
        keys = [k for k, _, _ in self.shape_mismatches]
        return any(k.endswith("class_embed.weight") for k in keys) and not (self.missing or self.unexpected) and all(
            k.endswith(("class_embed.weight", "class_embed.bias", "criterion.empty_weight")) for k in keys
        )

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
        if self.only_classifier_differs:
            ckpt, model = next((c[0] - 1, m[0] - 1) for k, c, m in self.shape_mismatches if k.endswith("class_embed.weight"))
            return (
                f"Checkpoint {self.source} has {ckpt} classes, {target} {model} (MODEL.SEM_SEG_HEAD.NUM_CLASSES): "
                f"{self.loaded} of {self.model_keys} keys loaded; the classifier (class_embed) is re-initialised "
                "and the criterion's class weights are set from the config; nothing else is left out."
            )
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


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model; `.report` says which keys."""

    def __init__(self, message: str, report: "CheckpointKeyReport"):
        super().__init__(message)
        self.report = report
