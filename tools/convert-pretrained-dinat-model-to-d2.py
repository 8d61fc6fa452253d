#!/usr/bin/env python
"""Convert an ImageNet DiNAT checkpoint (.pth) into the detectron2 .pkl that MODEL.WEIGHTS expects.

Usage:
    python tools/convert-pretrained-dinat-model-to-d2.py dinat_large_in22k_224.pth dinat_large_in22k_224.pkl

The input holds the classifier's state dict under "model" or "state_dict". Its backbone
tensors (patch_embed.*, levels.*) already carry D2DiNAT's names; the classifier's final
`norm` and `head` have no counterpart in D2DiNAT (whose per-level output norms norm0..norm3
start from their default initialisation) and are left out. The output is
{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}: detectron2's
DetectionCheckpointer reads such a .pkl and matches its names as suffixes of the model's,
so it loads into a bare D2DiNAT as well as into a full model's `backbone.` entries.
"""
import argparse
import os
import pickle
import sys
from typing import Dict, List, NamedTuple

import torch

from mask2former_dinat.checkpoint import atomic_write

BACKBONE_PREFIXES = ("patch_embed.", "levels.")
CLASSIFIER_PREFIXES = ("norm.", "head.")


class Conversion(NamedTuple):
    """What a conversion kept (name -> array) and what it dropped (classifier / unknown names)."""

    model: Dict[str, "object"]
    dropped_classifier: List[str]
    dropped_unknown: List[str]


def load_state_dict(path: str, weights_only: bool = True) -> Dict[str, torch.Tensor]:
    """The DiNAT state dict inside an ImageNet checkpoint file ("model" or "state_dict" entry)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # an unpickling error's type differs across torch versions
        if weights_only:
            raise ValueError(
                f"{path} could not be read with torch.load(weights_only=True): {e}\n"
                "If the file comes from a source you trust and holds extra Python objects (e.g. training "
                "arguments), rerun with --unsafe-load."
            ) from e
        raise
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict with 'model' or 'state_dict'.")
    for key in ("model", "state_dict"):
        if key in obj and isinstance(obj[key], dict):
            state = obj[key]
            break
    else:
        raise ValueError(
            f"{path} has neither a 'model' nor a 'state_dict' entry (top-level keys: {sorted(map(str, obj))[:20]}); "
            "expected an ImageNet DiNAT checkpoint."
        )
    if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def convert(state: Dict[str, torch.Tensor]) -> Conversion:
    """Keep the backbone tensors of a DiNAT classifier state dict as numpy arrays."""
    model, classifier, unknown = {}, [], []
    for name, value in state.items():
        if name.startswith(BACKBONE_PREFIXES):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16
                value = value.float()
            model[name] = value.numpy()
        elif name.startswith(CLASSIFIER_PREFIXES):
            classifier.append(name)
        else:
            unknown.append(name)
    if not model:
        raise ValueError(
            f"no DiNAT backbone tensors (names starting with {' or '.join(BACKBONE_PREFIXES)}) in the checkpoint; "
            f"first names found: {list(state)[:10]}"
        )
    return Conversion(model, sorted(classifier), sorted(unknown))


def main(argv=None) -> Conversion:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="ImageNet DiNAT checkpoint (.pth)")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help="read the input with full unpickling (only for files from a source you trust)",
    )
    args = parser.parse_args(argv)
    if not args.output.endswith(".pkl"):
        parser.error(f"output must end in .pkl (detectron2 reads name-matched weights only from .pkl), got {args.output}")

    result = convert(load_state_dict(args.input, weights_only=not args.unsafe_load))
    with atomic_write(args.output) as f:  # an interrupted run leaves no partial .pkl
        pickle.dump(
            {"model": result.model, "__author__": "DiNAT ImageNet checkpoint", "matching_heuristics": True}, f
        )
    print(f"wrote {len(result.model)} backbone tensors to {args.output}")
    if result.dropped_classifier:
        print(f"left out the classifier (not part of D2DiNAT): {', '.join(result.dropped_classifier)}")
    if result.dropped_unknown:
        print(f"left out names that are not DiNAT backbone weights: {', '.join(result.dropped_unknown)}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
