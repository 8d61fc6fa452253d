#!/usr/bin/env python
"""The main job (`make demo`): DiNAT Mask2Former trained, evaluated and shown on the embedded
synthetic panoptic dataset, on CPU, with no dataset, GPU or download.

1. writes the synthetic dataset (COCO panoptic format) under $DETECTRON2_DATASETS/synthetic;
2. builds mask2former_dinat.engine's Trainer for configs/synthetic/maskformer2_dinat_tiny_synthetic_panoptic.yaml
   (seeded) and evaluates its model on the held-out split (PQ, PQ_th, PQ_st, AP, mIoU): the
   untrained baseline is the very model training then starts from;
3. trains it for SOLVER.MAX_ITER iterations (or --iterations), the same number on every machine,
   printing a progress line (iteration, elapsed time, ETA) as it goes;
4. evaluates the trained model on the held-out split;
5. runs demo/demo.py on held-out images and on a generated video;
6. writes <output>/metrics.json and prints a summary.

    python tools/main_job.py [--output output/main_job] [--iterations N] [--seed 0] [--threads 1]
                             [--num-train 800] [--opts KEY VALUE ...]
"""
import argparse
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import cv2
import torch
from detectron2.engine import HookBase, hooks
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

import mask2former_dinat  # noqa: F401  (registers the model and datasets)
from mask2former_dinat.config import get_cfg
from mask2former_dinat.data import synthetic
from mask2former_dinat.data.datasets import datasets_root
from mask2former_dinat.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic" / "maskformer2_dinat_tiny_synthetic_panoptic.yaml"
METRICS = ("PQ", "PQ_th", "PQ_st", "AP", "mIoU")
logger = logging.getLogger("mask2former_dinat.main_job")


def headline(results):
    """PQ, PQ_th, PQ_st, AP, mIoU out of detectron2's nested results (None where missing)."""
    panoptic, segm, sem = (results.get(k, {}) for k in ("panoptic_seg", "segm", "sem_seg"))
    return {"PQ": panoptic.get("PQ"), "PQ_th": panoptic.get("PQ_th"), "PQ_st": panoptic.get("PQ_st"),
            "AP": segm.get("AP"), "mIoU": sem.get("mIoU")}


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress(HookBase):
    """Prints "iteration i/N (p%), elapsed m:ss, ETA m:ss, loss x" about `lines` times during
    training, and at the last iteration."""

    def __init__(self, lines=20, stream=None):
        self.lines = lines
        self.stream = stream or sys.stdout

    def before_train(self):
        self._start = time.perf_counter()
        self._every = max(1, math.ceil((self.trainer.max_iter - self.trainer.start_iter) / self.lines))

    def after_step(self):
        done = self.trainer.iter + 1
        total = self.trainer.max_iter
        if done != total and (done - self.trainer.start_iter) % self._every:
            return
        elapsed = time.perf_counter() - self._start
        eta = elapsed / (done - self.trainer.start_iter) * (total - done)
        loss = self.trainer.storage.history("total_loss").latest()
        print(f"[train] iteration {done}/{total} ({100 * done / total:.0f}%), elapsed {_clock(elapsed)}, "
              f"ETA {_clock(eta)}, loss {loss:.2f}", file=self.stream, flush=True)


class MainJobTrainer(Trainer):
    """The project's Trainer with a progress line and without the evaluation detectron2's
    EvalHook runs after the last iteration (the main job evaluates the trained model itself)."""

    def __init__(self, cfg, progress=True):
        self.show_progress = progress  # read by build_hooks, which Trainer.__init__ calls
        super().__init__(cfg)

    def build_hooks(self):
        ret = [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]
        return ret + ([Progress()] if self.show_progress else [])


def build_cfg(args, output):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(args.opts)
    if args.iterations is not None:
        if args.iterations < 1:
            raise SystemExit(f"--iterations must be >= 1, got {args.iterations}")
        cfg.SOLVER.MAX_ITER = args.iterations
        cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, args.iterations)
    cfg.MODEL.DEVICE = args.device
    cfg.OUTPUT_DIR = str(output / "train")
    cfg.SEED = args.seed
    cfg.freeze()
    return cfg


def evaluate(cfg, model):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        results = Trainer.test(cfg, model)
    model.train(was_training)
    return results


def train_and_evaluate(cfg, progress=True):
    """Seeds everything from cfg.SEED, builds the Trainer, evaluates its model (the untrained
    baseline: the very model training starts from), trains cfg.SOLVER.MAX_ITER iterations and
    evaluates again. Returns (untrained results, trained results, training minutes)."""
    seed_all_rng(cfg.SEED)  # the initialisation, the data order and augmentation, the loss's points
    trainer = MainJobTrainer(cfg, progress=progress)
    trainer.resume_or_load(resume=False)
    logger.info("evaluating the untrained model (the one training starts from)")
    untrained = evaluate(cfg, trainer.model)
    logger.info(f"training {cfg.SOLVER.MAX_ITER} iterations")
    start = time.perf_counter()
    trainer.train()
    train_minutes = (time.perf_counter() - start) / 60
    return untrained, evaluate(cfg, trainer.model), train_minutes


def upscaled_copies(images, folder, factor):
    """The demo's inputs: the held-out images enlarged `factor` times (nearest neighbour), so that
    the drawn labels are legible. The model sees the same pixels: its test resize
    (INPUT.MIN_SIZE_TEST) brings them back to the original size, and the masks are drawn at the
    enlarged size."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in images:
        image = cv2.imread(str(path))
        big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
        target = folder / (path.stem + ".png")
        cv2.imwrite(str(target), big)
        out.append(target)
    return out


def run_demo(cfg_file, weights, inputs, video, vis_dir, opts):
    demo = [sys.executable, str(ROOT / "demo" / "demo.py"), "--config-file", str(cfg_file)]
    tail = ["--opts", "MODEL.WEIGHTS", str(weights), *opts]
    subprocess.run(demo + ["--input", *map(str, inputs), "--output", str(vis_dir / "images")] + tail, check=True)
    subprocess.run(demo + ["--video-input", str(video), "--output", str(vis_dir / "video.mp4")] + tail, check=True)


def format_table(metrics):
    rows = [("", *METRICS)] + [
        (name, *(f"{metrics[name][k]:.1f}" if metrics[name][k] is not None else "-" for k in METRICS))
        for name in ("untrained", "trained")
    ]
    return "\n".join(f"{r[0]:<10}" + "".join(f"{c:>8}" for c in r[1:]) for r in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "output" / "main_job"), help="where results go")
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations (default: the config's SOLVER.MAX_ITER)")
    parser.add_argument("--num-train", type=int, default=800, help="synthetic training images (default 800)")
    parser.add_argument("--num-val", type=int, default=50, help="synthetic held-out images (default 50)")
    parser.add_argument("--num-vis", type=int, default=8, help="held-out images the demo draws (default 8)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the initialisation and training")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (default 1: the model is so small that "
                        "more threads cost more in synchronisation than they gain; the data loader "
                        "works in its own process)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    setup_logger(str(output / "log.txt"), name="mask2former_dinat")
    setup_logger(str(output / "log.txt"), name="detectron2", abbrev_name="d2")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    data_dir = Path(datasets_root()) / "synthetic"
    synthetic.generate(data_dir, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    logger.info(f"synthetic dataset: {data_dir} ({args.num_train} train, {args.num_val} held-out images)")

    cfg = build_cfg(args, output)
    untrained, trained, train_minutes = train_and_evaluate(cfg)

    weights = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    vis_dir = output / "visualizations"
    images = sorted((data_dir / "val" / "images").glob("*.jpg"))[: args.num_vis]
    inputs = upscaled_copies(images, output / "demo_inputs", factor=4)
    video = synthetic.write_video(output / "synthetic_clip.mp4", num_frames=24)
    run_demo(CONFIG, weights, inputs, video, vis_dir, ["MODEL.DEVICE", args.device, *args.opts])

    metrics = {
        "untrained": headline(untrained),
        "trained": headline(trained),
        "iterations": cfg.SOLVER.MAX_ITER,
        "seed": cfg.SEED,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "weights": str(weights),
        "visualizations": str(vis_dir),
        "full_results": {"untrained": untrained, "trained": trained},
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    print(f"\nHeld-out synthetic split ({args.num_val} images), {cfg.SOLVER.MAX_ITER} iterations in "
          f"{train_minutes:.1f} min on {args.device} ({metrics['total_minutes']:.1f} min in all):\n"
          f"{format_table(metrics)}\n\nmetrics: {output / 'metrics.json'}\nvisualizations: {vis_dir}")
    return metrics


if __name__ == "__main__":
    main()
