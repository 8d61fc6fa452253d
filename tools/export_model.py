#!/usr/bin/env python
"""Export a Mask2Former-DiNAT model, from the raw image to its raw outputs, to ONNX or torch.export.

    python tools/export_model.py --config-file C --format onnx --output model.onnx [--size H W | --dynamic] \
        [--opts MODEL.WEIGHTS <checkpoint path or URL> KEY VALUE ...]

Graph input `image`: float32 [1, 3, H, W], RGB in 0-255 (normalisation and padding to the size
divisibility inside). Outputs `pred_logits` [1, Q, C+1] and `pred_masks` [1, Q, H_pad/4, W_pad/4].
`--size H W` (default 512 512) exports one size; `--dynamic` any height and width from 64 to
4096 (mask2former_dinat/export/torch_export.py says how). Prints the file, its size, the opset
and the largest difference to PyTorch on a random image. Exit status 0 done, 2 could not export.
"""
import argparse
import logging
import os
import sys
import time

DYNAMIC_TRACE = 4  # a dynamic export is traced at 4x6 blocks of the size divisibility


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the model's config")
    parser.add_argument("--format", required=True, choices=("onnx", "torch-export"))
    parser.add_argument("--output", required=True, help="file to write (.onnx or .pt2)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="static input size (default 512 512)")
    size.add_argument("--dynamic", action="store_true", help="any input height and width from 64 to 4096")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs")
    return parser


def _config(args):
    from mask2former_dinat import get_cfg

    if not os.path.isfile(args.config_file):
        raise ValueError(f"--config-file {args.config_file}: no such file")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    try:
        cfg.merge_from_list(args.opts)
    except (AssertionError, KeyError, ValueError) as e:  # yacs reports bad overrides with these
        raise ValueError(f"--opts {' '.join(args.opts)}: {e} (give KEY VALUE pairs of existing config keys)") from None
    cfg.MODEL.DEVICE = "cpu"  # exported graphs are device-neutral; tracing on CPU needs no GPU
    cfg.freeze()
    return cfg


def export(args) -> int:
    import numpy as np
    import torch

    from mask2former_dinat.export import metadata as metadata_lib
    from mask2former_dinat.export.exportable_model import build_exportable
    from mask2former_dinat.export.torch_export import DEFAULT_DYNAMIC_RANGE, export_program, load_program, save_program

    cfg = _config(args)
    model, wrapper = build_exportable(cfg, config_name=args.config_file)
    div = max(1, wrapper.size_divisibility)
    if args.dynamic:
        size, check_size = (DYNAMIC_TRACE * div, int(DYNAMIC_TRACE * 1.5) * div), (DYNAMIC_TRACE * div + div // 2, 5 * div + 3)
    else:
        size = tuple(args.size or (512, 512))
        if min(size) < 1:
            raise ValueError(f"--size {size[0]} {size[1]}: sizes must be positive")
        check_size = size
    meta = metadata_lib.model_metadata(cfg, model, None if args.dynamic else size,
                                       DEFAULT_DYNAMIC_RANGE if args.dynamic else None)
    start = time.perf_counter()
    program = export_program(wrapper, size, DEFAULT_DYNAMIC_RANGE if args.dynamic else None)
    if args.format == "onnx":
        from mask2former_dinat.export.onnx_export import OPSET, export_onnx
        from mask2former_dinat.export.onnx_runtime import OnnxMaskFormer

        export_onnx(program, args.output, meta)
        runner = OnnxMaskFormer(args.output)
        run = lambda rgb: runner.raw(rgb)[:2]  # noqa: E731
        what = f"ONNX opset {OPSET}, onnxruntime"
    else:
        save_program(program, args.output, meta)
        run_program, _ = load_program(args.output)
        run = lambda rgb: [t[0].numpy() for t in run_program(torch.from_numpy(rgb.transpose(2, 0, 1)[None].copy()))]  # noqa: E731
        what = "torch.export program, reloaded"
    seconds = time.perf_counter() - start
    shape = "dynamic H, W in [{}, {}]".format(*DEFAULT_DYNAMIC_RANGE) if args.dynamic else f"{size[0]}x{size[1]}"
    print(f"wrote {args.output}: {os.path.getsize(args.output) / 2**20:.1f} MiB, {what}, input image float32 "
          f"[1, 3, H, W] RGB 0-255 ({shape}), exported in {seconds:.0f} s")
    rgb = np.random.default_rng(0).uniform(0, 255, (*check_size, 3)).astype(np.float32)
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(rgb.transpose(2, 0, 1)[None].copy()))
    got = run(rgb)
    diffs = [float(np.abs(g - r[0].numpy()).max()) for g, r in zip(got, ref)]
    print(f"parity with PyTorch on a random {check_size[0]}x{check_size[1]} image: max abs difference "
          f"pred_logits {diffs[0]:.2e}, pred_masks {diffs[1]:.2e}")
    return 0


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return export(args)
    except (ValueError, ImportError, OSError) as e:
        print(f"export_model: cannot export: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
