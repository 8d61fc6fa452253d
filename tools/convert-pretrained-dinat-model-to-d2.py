#!/usr/bin/env python
r"""Convert an ImageNet DiNAT checkpoint (.pth) into the detectron2 .pkl that MODEL.WEIGHTS expects.

Usage:
    python tools/convert-pretrained-dinat-model-to-d2.py dinat_large_in22k_224_11x11interp.pth dinat_large_in22k_224.pkl \
        --config-file configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml
    # a kernel-7 checkpoint for a kernel-11 config: resize the relative position biases
    python tools/convert-pretrained-dinat-model-to-d2.py dinat_large_in22k_224.pth dinat_large_in22k_224.pkl \
        --kernel-size 11 --interpolate-rpb

The input (a path, or an http(s) URL downloaded once into the MODEL.WEIGHTS cache) is the
classification model's state dict in any of the layouts the checkpoints come in: bare (as the
ImageNet DiNAT files are distributed), under "model" or under "state_dict", with or without the
"module." prefix of data-parallel training. Its backbone tensors (patch_embed.*, levels.*)
already carry D2DiNAT's names; the classifier's final `norm` and `head` have no counterpart in
D2DiNAT (whose per-level output norms norm0..norm3 start from their default initialisation)
and are left out.

The relative position biases (levels.i.blocks.j.attn.rpb, [heads, 2k-1, 2k-1]) fix the kernel
size. With --config-file (or --kernel-size) a checkpoint of another kernel size is refused,
naming the tables, unless --interpolate-rpb: each table is then resized to [heads, 2k'-1, 2k'-1]
by torch.nn.functional.interpolate(mode="bicubic", align_corners=False), a choice of this
project (offset 0 stays at the table's centre). --config-file also checks every converted
tensor's name and shape against the config's backbone.

The output is {"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True,
"imagenet_pretraining": {what was left out / resized}}: detectron2's DetectionCheckpointer reads
such a .pkl and matches its names as suffixes of the model's, so it loads into a bare D2DiNAT as
well as into a full model's `backbone.` entries; this project's checkpointer loads it under the
`backbone.` prefix and reports where every tensor went. MODEL.WEIGHTS also takes the .pth (or
its URL) itself, converted in memory; only resizing the biases needs this tool.
"""
import argparse
import os
import pickle
import re
import sys
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from mask2former_dinat import imagenet_pretraining
from mask2former_dinat.checkpoint import atomic_write, group_keys, resolve_weights_path
from mask2former_dinat.imagenet_pretraining import Conversion, unwrap_state_dict

AUTHOR = "DiNAT ImageNet checkpoint"
_OUTPUT_NORM = re.compile(r"^norm\d+\.")


def load_state_dict(
    path: str, weights_only: bool = True, source: Optional[str] = None
) -> Tuple[Dict[str, torch.Tensor], str]:
    """The DiNAT state dict inside a checkpoint file (see the module doc for the layouts), and its layout.
    source: how errors name the file (default: `path`)."""
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
    return unwrap_state_dict(obj, source or path)


def backbone_of_config(config_file: str):
    """(cfg, {name: shape} of the config's backbone), the backbone built on the meta device (no memory)."""
    from detectron2.modeling import build_backbone

    from mask2former_dinat.config import get_cfg  # importing mask2former_dinat registers D2DiNAT

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    return cfg, {name: tuple(t.shape) for name, t in backbone.state_dict().items()}


def check_fits_backbone(conversion: Conversion, shapes: Mapping[str, Tuple[int, ...]], *, source: str,
                        config: str) -> List[str]:
    """Every converted tensor has a place of its shape in the backbone, and the backbone lacks only
    its per-level output norms; returns those. Raises ValueError naming the keys otherwise."""
    if "patch_embed.proj.0.weight" not in shapes:
        raise ValueError(f"config {config} has no DiNAT backbone (MODEL.BACKBONE.NAME should be D2DiNAT).")
    unexpected = sorted(k for k in conversion.backbone if k not in shapes)
    reshaped = sorted(k for k in conversion.backbone if k in shapes and tuple(conversion.backbone[k].shape) != shapes[k])
    missing = sorted(k for k in shapes if k not in conversion.backbone)
    lacking = [k for k in missing if not _OUTPUT_NORM.match(k)]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} tensors the backbone has no place for: {'; '.join(group_keys(unexpected)[:8])}")
    if reshaped:
        example = reshaped[0]
        problems.append(
            f"{len(reshaped)} tensors of another shape: {'; '.join(group_keys(reshaped)[:8])} (e.g. {example}: "
            f"checkpoint {list(conversion.backbone[example].shape)}, backbone {list(shapes[example])})"
        )
    if lacking:
        problems.append(f"{len(lacking)} backbone tensors it lacks: {'; '.join(group_keys(lacking)[:8])}")
    if problems:
        raise ValueError(
            f"{source} does not fit the backbone of config {config} (another DiNAT variant?): " + "; ".join(problems)
        )
    return missing


def main(argv=None) -> Conversion:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="ImageNet DiNAT checkpoint (.pth): a path or an http(s) URL")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    parser.add_argument(
        "--config-file", metavar="YAML",
        help="the config the weights are for: its MODEL.DINAT.KERNEL_SIZE is the target kernel size, and every "
             "converted tensor is checked against its backbone",
    )
    parser.add_argument(
        "--kernel-size", type=int, metavar="K",
        help="the kernel size the weights are for (default: the config's, else the checkpoint's own)",
    )
    parser.add_argument(
        "--interpolate-rpb", action="store_true",
        help="when the checkpoint's kernel size differs from the target, resize each relative position bias "
             "[heads, 2k-1, 2k-1] to [heads, 2K-1, 2K-1] (torch.nn.functional.interpolate, mode='bicubic', "
             "align_corners=False: a documented choice; offset 0 stays at the centre) instead of refusing",
    )
    parser.add_argument(
        "--unsafe-load", action="store_true",
        help="read the input with full unpickling (only for files from a source you trust)",
    )
    args = parser.parse_args(argv)
    if not args.output.endswith(".pkl"):
        parser.error(f"output must end in .pkl (detectron2 reads name-matched weights only from .pkl), got {args.output}")

    kernel_size, target, shapes = args.kernel_size, None, None
    if args.config_file:
        cfg, shapes = backbone_of_config(args.config_file)
        if kernel_size is not None and kernel_size != cfg.MODEL.DINAT.KERNEL_SIZE:
            parser.error(
                f"--kernel-size {kernel_size} contradicts {args.config_file}'s MODEL.DINAT.KERNEL_SIZE "
                f"{cfg.MODEL.DINAT.KERNEL_SIZE}; give one of them"
            )
        kernel_size = cfg.MODEL.DINAT.KERNEL_SIZE
        target = f"config {args.config_file} (MODEL.DINAT.KERNEL_SIZE)"
    elif kernel_size is not None:
        target = f"--kernel-size {kernel_size}"

    path = resolve_weights_path(args.input)
    state, layout = load_state_dict(path, weights_only=not args.unsafe_load, source=args.input)
    advice = (
        f"Pass --interpolate-rpb to resize each table ({imagenet_pretraining.RPB_RESIZE}), or use a checkpoint "
        f"trained with kernel size {kernel_size}"
        + (" (for the published kernel-11 configs: dinat_large_in22k_224_11x11interp.pth)." if kernel_size == 11 else ".")
    )
    result = imagenet_pretraining.convert(
        state, kernel_size=kernel_size, interpolate=args.interpolate_rpb, source=args.input, target=target,
        advice=advice,
    )
    output_norms = check_fits_backbone(result, shapes, source=args.input, config=args.config_file) if shapes else None

    resized_from = result.source_kernel_size if result.interpolated else None
    with atomic_write(args.output) as f:  # an interrupted run leaves no partial .pkl
        pickle.dump(
            {
                "model": result.numpy(),
                "__author__": AUTHOR,
                "matching_heuristics": True,
                imagenet_pretraining.CONVERTED_KEY: {
                    "source": os.path.basename(args.input.rstrip("/")),
                    "layout": layout,
                    "classifier": list(result.classifier),
                    "unknown": list(result.unknown),
                    "kernel_size": result.kernel_size,
                    "resized_from": resized_from,
                },
            },
            f,
        )
    print(f"read {args.input}: {layout}, {result.total} tensors, kernel size {result.source_kernel_size}")
    if result.interpolated:
        print(
            f"resized the relative position biases of {len(result.interpolated)} blocks from kernel size "
            f"{result.source_kernel_size} to {result.kernel_size} ({imagenet_pretraining.RPB_RESIZE}): "
            f"{'; '.join(group_keys(result.interpolated))}"
        )
    if result.classifier:
        print(
            f"left out the classifier and its final norm (no counterpart in D2DiNAT, {len(result.classifier)}): "
            f"{', '.join(result.classifier)}"
        )
    if result.unknown:
        print(f"left out names that are not DiNAT backbone weights ({len(result.unknown)}): {', '.join(result.unknown)}")
    print(f"wrote {len(result.backbone)} backbone tensors (kernel size {result.kernel_size}) to {args.output}")
    if output_norms is not None:
        print(
            f"fits the backbone of {args.config_file}: all {len(result.backbone)} tensors have its names and shapes; "
            f"its per-level output norms start from initialisation ({len(output_norms)}): "
            f"{'; '.join(group_keys(output_norms))}"
        )
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
