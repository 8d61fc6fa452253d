"""ImageNet DiNAT classification checkpoints as the starting point of D2DiNAT.

The published ImageNet DiNAT files (`dinat_large_in22k_224.pth`, kernel 7, and
`dinat_large_in22k_224_11x11interp.pth`, kernel 11) hold the classification model's state
dict: the original classification code passes the downloaded object straight to
`load_state_dict`. This module reads such a checkpoint in every layout it comes in

- a bare state dict (as distributed),
- `{"model": state_dict, ...}` or `{"state_dict": state_dict, ...}` (training scripts),
- any of these with the `module.` prefix of (Distributed)DataParallel,

and turns it into D2DiNAT weights. The backbone tensors (`patch_embed.*`, `levels.*`)
already carry D2DiNAT's names; the classifier `head.*` and its final `norm.*` have no
counterpart in D2DiNAT and are left out (D2DiNAT's per-level output norms `norm0..norm3`
start from their initialisation instead).

Relative position biases (`levels.i.blocks.j.attn.rpb`, [heads, 2k-1, 2k-1]) fix the
kernel size k. A checkpoint of another kernel size than the target is refused unless the
caller asks for `interpolate_rpb`: each table is then resized to [heads, 2k'-1, 2k'-1] with
`torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`, the choice this
project documents (the table is resized as an image over relative offsets; offset 0 stays at
the centre).

Used by tools/convert-pretrained-dinat-model-to-d2.py (writes a .pkl) and by
mask2former_dinat.checkpoint (MODEL.WEIGHTS pointing at the .pth itself, converted in memory).
"""
import dataclasses
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BACKBONE_PREFIXES",
    "CLASSIFIER_PREFIXES",
    "CONVERTED_KEY",
    "CONVERTER",
    "Conversion",
    "KernelSizeMismatchError",
    "convert",
    "check_kernel_size",
    "interpolate_rpb",
    "interpolation_advice",
    "is_classification_state",
    "kernel_size_of",
    "unwrap_state_dict",
]

BACKBONE_PREFIXES = ("patch_embed.", "levels.")
CLASSIFIER_PREFIXES = ("norm.", "head.")
CONVERTER = "tools/convert-pretrained-dinat-model-to-d2.py"
CONVERTED_KEY = "imagenet_pretraining"  # the converter's .pkl: what it left out and resized
RPB_RESIZE = "bicubic, align_corners=False"
_MODULE_PREFIX = "module."
_RPB = re.compile(r"^levels\.\d+\.blocks\.\d+\.attn\.rpb$")


class KernelSizeMismatchError(ValueError):
    """The checkpoint's relative position biases are for another kernel size than the target's."""


@dataclasses.dataclass(frozen=True)
class Conversion:
    """D2DiNAT weights made from a classification checkpoint.

    backbone: D2DiNAT name -> tensor; classifier: the left-out `head.*` / `norm.*` names;
    unknown: left-out names that are no DiNAT weights; source_kernel_size: the checkpoint's
    kernel size; kernel_size: the converted weights' (differs only when `interpolated`, the
    rpb names that were resized, is not empty).
    """

    backbone: Dict[str, torch.Tensor]
    classifier: Tuple[str, ...]
    unknown: Tuple[str, ...]
    source_kernel_size: int
    kernel_size: int
    interpolated: Tuple[str, ...] = ()

    @property
    def left_out(self) -> Tuple[str, ...]:
        return self.classifier + self.unknown

    @property
    def total(self) -> int:
        """How many tensors the checkpoint held (kept + left out)."""
        return len(self.backbone) + len(self.left_out)

    def numpy(self) -> Dict[str, np.ndarray]:
        """The backbone as numpy arrays (a detectron2 .pkl); bfloat16, which numpy lacks, as float32."""
        out = {}
        for name, value in self.backbone.items():
            value = value.detach().cpu()
            out[name] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        return out


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, (torch.Tensor, np.ndarray)) for k, v in obj.items())
    )


def unwrap_state_dict(obj: Any, source: str) -> Tuple[Dict[str, Any], str]:
    """The state dict inside a checkpoint object, without a `module.` prefix, and its layout in words.

    Accepts a bare state dict, `{"model": state_dict, ...}` and `{"state_dict": state_dict, ...}`.
    Raises ValueError naming `source` and what it holds otherwise.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a DiNAT checkpoint (a state dict of tensors).")
    if _is_state_dict(obj):
        state, layout = dict(obj), "a bare state dict"
    else:
        for key in ("model", "state_dict"):
            if _is_state_dict(obj.get(key)):
                state, layout = dict(obj[key]), f"a state dict under {key!r}"
                break
        else:
            keys = sorted(map(str, obj))
            raise ValueError(
                f"{source} is not a DiNAT checkpoint: it is no state dict (names -> tensors) and has neither a "
                f"'model' nor a 'state_dict' entry holding one (top-level keys: {keys[:20]}"
                f"{' ...' if len(keys) > 20 else ''})."
            )
    if all(k.startswith(_MODULE_PREFIX) for k in state):  # saved from a (Distributed)DataParallel wrapper
        state = {k[len(_MODULE_PREFIX):]: v for k, v in state.items()}
        layout += " with the 'module.' prefix of data-parallel training"
    return state, layout


def is_classification_state(state: Mapping[str, Any]) -> bool:
    """Whether a state dict is a DiNAT classifier's: tokenizer and levels, and nothing but
    `patch_embed.*`, `levels.*`, the final `norm.*` and the `head.*`."""
    return (
        "patch_embed.proj.0.weight" in state
        and any(_RPB.match(k) for k in state)
        and all(k.startswith(BACKBONE_PREFIXES + CLASSIFIER_PREFIXES) for k in state)
    )


def _check_is_dinat(state: Mapping[str, Any], source: str) -> None:
    if not any(k.startswith(BACKBONE_PREFIXES) for k in state):
        if any(k.startswith("backbone.") for k in state):
            raise ValueError(
                f"{source} is a detectron2 model checkpoint (its names start with 'backbone.'), not an ImageNet "
                "DiNAT classifier: it needs no conversion; pass it as MODEL.WEIGHTS directly."
            )
        raise ValueError(
            f"{source} is not a DiNAT checkpoint: no backbone tensors (names starting with "
            f"{' or '.join(BACKBONE_PREFIXES)}); first names found: {list(state)[:10]}"
        )
    if not any(_RPB.match(k) for k in state):
        raise ValueError(
            f"{source} is not a DiNAT checkpoint: it has no relative position biases (levels.<i>.blocks.<j>.attn.rpb)."
        )


def kernel_size_of(state: Mapping[str, Any], source: str) -> int:
    """The kernel size that the relative position biases ([heads, 2k-1, 2k-1]) of `state` are for.

    Raises ValueError naming the first table whose shape is no such table, or the kernel sizes
    when the blocks disagree.
    """
    sizes: Dict[int, List[str]] = {}
    for name, value in state.items():
        if not _RPB.match(name):
            continue
        shape = tuple(value.shape)
        if len(shape) != 3 or shape[1] != shape[2] or shape[1] % 2 == 0 or shape[1] < 5:
            raise ValueError(
                f"{source}: {name} has shape {list(shape)}, not [heads, 2k-1, 2k-1] for an odd kernel size k >= 3: "
                "not a DiNAT relative position bias."
            )
        sizes.setdefault((shape[1] + 1) // 2, []).append(name)
    if not sizes:
        raise ValueError(f"{source}: no relative position biases (levels.<i>.blocks.<j>.attn.rpb).")
    if len(sizes) > 1:
        listing = "; ".join(f"kernel {k}: {len(v)} blocks, e.g. {v[0]}" for k, v in sorted(sizes.items()))
        raise ValueError(f"{source}: the blocks' relative position biases are for different kernel sizes ({listing}).")
    return next(iter(sizes))


def interpolate_rpb(rpb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Resize a relative position bias [heads, 2k-1, 2k-1] to [heads, 2K-1, 2K-1] for kernel size K.

    Bicubic, align_corners=False (torch.nn.functional.interpolate): the table is resized as an
    image over relative offsets, so offset 0 stays at the centre. Computed in float32, returned
    in the input's dtype.
    """
    size = 2 * kernel_size - 1
    resized = F.interpolate(rpb.float().unsqueeze(0), size=(size, size), mode="bicubic", align_corners=False)
    return resized.squeeze(0).to(rpb.dtype)


def _mismatch_message(source, state, k_src, k_dst, target, advice) -> str:
    tables = sorted(k for k in state if _RPB.match(k))
    example = tables[0]
    heads = tuple(state[example].shape)[0]
    return (
        f"{source}: its relative position biases are for kernel size {k_src} ({example} {list(state[example].shape)} "
        f"and {len(tables) - 1} more tables), but {target} has kernel size {k_dst} ([{heads}, {2 * k_dst - 1}, "
        f"{2 * k_dst - 1}]). {advice}"
    )


def interpolation_advice(kernel_size: int) -> str:
    """What to do about a kernel-size mismatch (the text of the refusal)."""
    return (
        f"Use a checkpoint trained with kernel size {kernel_size} (for the published kernel-11 configs: "
        f"dinat_large_in22k_224_11x11interp.pth), or resize each table to kernel {kernel_size} with "
        f"`{CONVERTER} <checkpoint> <out>.pkl --kernel-size {kernel_size} --interpolate-rpb` "
        f"({RPB_RESIZE}) and train from the .pkl."
    )


def check_kernel_size(
    state: Mapping[str, Any], kernel_size: int, *, source: str, target: str, advice: Optional[str] = None
) -> int:
    """The kernel size of `state`; raises KernelSizeMismatchError when it is not `kernel_size`."""
    found = kernel_size_of(state, source)
    if found != kernel_size:
        raise KernelSizeMismatchError(
            _mismatch_message(source, state, found, kernel_size, target, advice or interpolation_advice(kernel_size))
        )
    return found


def convert(
    state: Mapping[str, Any],
    *,
    kernel_size: Optional[int] = None,
    interpolate: bool = False,
    source: str = "<checkpoint>",
    target: Optional[str] = None,
    advice: Optional[str] = None,
) -> Conversion:
    """D2DiNAT weights from a DiNAT classifier's state dict (names without `module.`).

    kernel_size: the kernel size the weights are for (None: the checkpoint's). When it differs
    from the checkpoint's, raises KernelSizeMismatchError naming the tables, unless
    `interpolate`: then every rpb table is resized (see interpolate_rpb).
    target / advice: how the error names what the weights are for, and what it advises.
    Raises ValueError (naming `source`) for a state dict that is no DiNAT checkpoint.
    """
    _check_is_dinat(state, source)
    found = kernel_size_of(state, source)
    kernel_size = found if kernel_size is None else int(kernel_size)
    if found != kernel_size and not interpolate:
        target = target or "the target"
        raise KernelSizeMismatchError(
            _mismatch_message(source, state, found, kernel_size, target, advice or interpolation_advice(kernel_size))
        )
    backbone, classifier, unknown, interpolated = {}, [], [], []
    for name, value in state.items():
        if name.startswith(BACKBONE_PREFIXES):
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            if found != kernel_size and _RPB.match(name):
                value = interpolate_rpb(value, kernel_size)
                interpolated.append(name)
            backbone[name] = value
        elif name.startswith(CLASSIFIER_PREFIXES):
            classifier.append(name)
        else:
            unknown.append(name)
    return Conversion(backbone, tuple(sorted(classifier)), tuple(sorted(unknown)), found, kernel_size,
                      tuple(sorted(interpolated)))
