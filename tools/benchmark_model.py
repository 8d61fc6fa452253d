#!/usr/bin/env python
"""Inference speed and memory of a full Mask2Former-DiNAT model on one image.

Builds the model of --config with RANDOM weights (speed does not depend on the values;
post-processing barely does), runs one --size x --size image through it --repeat times
after a warm-up run, and prints the median seconds per image, split into backbone, pixel
decoder, transformer decoder and post-processing (everything else: normalisation,
padding, mask upsampling, semantic/panoptic/instance inference), with the fastest run
(useful on a shared machine) and peak memory.

    python tools/benchmark_model.py                 # DiNAT-L COCO panoptic, 512x512, CPU
    python tools/benchmark_model.py --size 1024 --device cuda
    python tools/benchmark_model.py --onnx [model.onnx]   # also onnxruntime on the same image

With --onnx the model is exported to ONNX at --size (or the given file, exported from the same
config, is used) and onnxruntime + NumPy post-processing (mask2former_dinat/export) is timed on
the same image, after PyTorch, in the same run.
"""
import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

DEFAULT_CONFIG = str(REPO / "configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml")
STAGES = ("backbone", "pixel decoder", "transformer decoder")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="model config (default: DiNAT-L COCO panoptic)")
    parser.add_argument("--size", type=int, default=512, help="image height and width in pixels (default 512)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up run (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--onnx", nargs="?", const="", default=None, metavar="FILE",
                        help="also time onnxruntime: export to a temporary file, or use FILE (same config, --size)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    if args.size < 32 or args.repeat < 1:
        parser.error("--size must be >= 32 and --repeat >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    return args


class StageTimer:
    """Accumulates wall time per stage of one forward pass; synchronises CUDA around each."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, stage, fn):
        def timed(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            self.seconds[stage] += time.perf_counter() - start
            return out

        return timed

    def reset(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)


def build(args):
    from detectron2.modeling import build_model

    import mask2former_dinat  # noqa: F401  (registers the components)
    from mask2former_dinat.config import get_cfg
    from mask2former_dinat.modeling import maskformer_model  # noqa: F401  (registers MaskFormer)

    cfg = get_cfg()
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    model = build_model(cfg)
    model.eval()
    if getattr(model, "panoptic_on", False) and model.metadata is not None and not hasattr(
        model.metadata, "thing_dataset_id_to_contiguous_id"
    ):
        raise SystemExit(
            f"dataset {model.metadata.name!r} is not registered, so panoptic inference has no thing classes; "
            "pass MODEL.MASK_FORMER.TEST.PANOPTIC_ON False or register the dataset"
        )
    return cfg, model


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model = build(args)
    device = torch.device(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    rss_after_build = peak_memory_gib(torch.device("cpu"))

    timer = StageTimer(device)
    model.backbone.forward = timer.wrap("backbone", model.backbone.forward)
    pixel_decoder = model.sem_seg_head.pixel_decoder
    pixel_decoder.forward_features = timer.wrap("pixel decoder", pixel_decoder.forward_features)
    predictor = model.sem_seg_head.predictor
    predictor.forward = timer.wrap("transformer decoder", predictor.forward)

    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, args.size, args.size), dtype=torch.uint8, generator=generator)
    inputs = [{"image": image, "height": args.size, "width": args.size}]

    runs = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        for i in range(args.repeat + 1):
            timer.reset()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            outputs = model(inputs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            total = time.perf_counter() - start
            if i > 0:  # the first run is a warm-up
                runs.append(dict(timer.seconds, total=total))
            del outputs

    for r in runs:
        r["post-processing"] = max(0.0, r["total"] - sum(r[s] for s in STAGES))
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    fastest = {k: min(r[k] for r in runs) for k in runs[0]}
    tasks = [t for t, on in (("semantic", model.semantic_on), ("panoptic", model.panoptic_on), ("instance", model.instance_on)) if on]

    print(f"config:  {args.config} (random weights, {n_params / 1e6:.1f}M parameters)")
    print(f"input:   1 image {args.size}x{args.size}, outputs: {', '.join(tasks)}")
    print(f"device:  {device}" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
          + f", torch {torch.__version__}, NA backend setting {cfg.MODEL.DINAT.NA_BACKEND!r}")
    print(f"runs:    median of {args.repeat} after 1 warm-up")
    print()
    print(f"| {'stage':<20} | {'median s':>8} | {'share':>6} | {'min s':>8} |")
    print(f"|{'-' * 22}|{'-' * 10}|{'-' * 8}|{'-' * 10}|")
    for stage in (*STAGES, "post-processing", "total"):
        print(f"| {stage:<20} | {median[stage]:8.3f} | {median[stage] / median['total']:6.1%} | {fastest[stage]:8.3f} |")
    print()
    if device.type == "cuda":
        print(f"peak GPU memory allocated: {peak_memory_gib(device):.2f} GiB")
    print(f"peak RSS: {peak_memory_gib(torch.device('cpu')):.2f} GiB (after building the model: {rss_after_build:.2f} GiB)")
    if args.onnx is not None:
        onnx_seconds = time_onnxruntime(args, cfg, model, image)
        print()
        print(f"seconds per image, same {args.size}x{args.size} image: PyTorch {median['total']:.3f} (median; "
              f"fastest {fastest['total']:.3f}), "
              f"onnxruntime + NumPy post-processing {onnx_seconds['total']:.3f} (graph {onnx_seconds['graph']:.3f}, "
              f"post-processing {onnx_seconds['post']:.3f}); ratio {onnx_seconds['total'] / median['total']:.2f}")
    return median


def time_onnxruntime(args, cfg, model, image):
    """Median seconds of onnxruntime (graph) and NumPy post-processing for `image` (uint8 [3, H, W]
    in INPUT.FORMAT), exporting the model first unless --onnx names a file."""
    import os
    import shutil
    import tempfile

    import numpy as np

    from mask2former_dinat.export import metadata, numpy_postprocess  # noqa: F401
    from mask2former_dinat.export.exportable_model import ExportableMaskFormer
    from mask2former_dinat.export.onnx_export import export_onnx
    from mask2former_dinat.export.onnx_runtime import OnnxMaskFormer
    from mask2former_dinat.export.torch_export import export_program

    path, temporary = args.onnx, None
    if not path:
        temporary = tempfile.mkdtemp(prefix="benchmark_onnx_")
        path = os.path.join(temporary, "model.onnx")
        start = time.perf_counter()
        wrapper = ExportableMaskFormer(model, cfg.INPUT.FORMAT).eval()
        meta = metadata.model_metadata(cfg, model, (args.size, args.size))
        export_onnx(export_program(wrapper, (args.size, args.size)), path, meta)
        print(f"exported {path} ({os.path.getsize(path) / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    runner = OnnxMaskFormer(path, threads=args.threads or 0)
    rgb = image.numpy().transpose(1, 2, 0)
    rgb = np.ascontiguousarray(rgb if cfg.INPUT.FORMAT == "RGB" else rgb[:, :, ::-1])
    runs = []
    for i in range(args.repeat + 1):
        start = time.perf_counter()
        logits, masks, padded = runner.raw(rgb)
        graph = time.perf_counter() - start
        runner.predict_from_raw(logits, masks, padded, rgb.shape[:2])
        if i > 0:
            runs.append({"graph": graph, "total": time.perf_counter() - start})
    if temporary:
        shutil.rmtree(temporary, ignore_errors=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    median["post"] = median["total"] - median["graph"]
    return median


if __name__ == "__main__":
    main()
