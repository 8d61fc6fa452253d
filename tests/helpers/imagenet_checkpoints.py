"""ImageNet DiNAT-L checkpoints as distributed, for tests: exactly the names and shapes of
tests/reference/imagenet_dinat_large_manifest.json, random values, in every layout.

No real checkpoint can be downloaded here, so the tests write their own. A full-valued DiNAT-L
state dict is 200M floats (about 3 s to draw, 800 MB on disk); `compact=True` gives every
matrix stride-0 rows (one random row repeated, so a saved file is a few MB) while the
relative position biases and all vectors stay fully random.
"""
import functools
from pathlib import Path
from typing import Dict, List

import torch
from helpers import configs
from helpers.reference import load_json

MANIFEST = load_json("imagenet_dinat_large_manifest.json")
KERNEL_7 = "dinat_large_in22k_224.pth"
KERNEL_11 = "dinat_large_in22k_224_11x11interp.pth"
CLASSIFIER = ("head.bias", "head.weight", "norm.bias", "norm.weight")
# (top-level wrapper, "module." prefix): how checkpoint files come
LAYOUTS = ("bare", "model", "state_dict", "bare+module.", "model+module.", "state_dict+module.")



def shapes(name: str) -> Dict[str, List[int]]:
    return MANIFEST[name]["state_dict"]


def backbone_names(name: str) -> List[str]:
    return [k for k in shapes(name) if k not in CLASSIFIER]


def state(name: str, *, compact: bool = False, device: str = "cpu", seed: int = 0) -> Dict[str, torch.Tensor]:
    """The checkpoint's state dict with random values (on the meta device: shapes only)."""
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in shapes(name).items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes(name).items():
        if compact and len(s) > 1 and not k.endswith("attn.rpb"):
            out[k] = torch.randn(s[1:], generator=g).expand(s)
        else:
            out[k] = torch.randn(s, generator=g)
    return out


def in_layout(state_dict: Dict[str, torch.Tensor], layout: str):
    """The object a checkpoint file of `layout` (one of LAYOUTS) holds."""
    wrapper, _, prefix = layout.partition("+")
    weights = {prefix + k: v for k, v in state_dict.items()}
    if wrapper == "bare":
        return weights
    return {wrapper: weights, "epoch": 300}


def write(path, name: str, layout: str = "bare", **state_kwargs) -> Path:
    torch.save(in_layout(state(name, **state_kwargs), layout), path)
    return Path(path)


@functools.lru_cache(maxsize=None)
def meta_model(config: str):
    """The full model of a published config, built on the meta device, once per config."""
    return configs.meta_model(config)
