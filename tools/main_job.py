#!/usr/bin/env python
"""The main job (`make demo`): DiNAT Mask2Former trained, evaluated and shown on the embedded
synthetic panoptic dataset, on CPU, with no dataset, GPU or download.

1. writes the synthetic dataset (COCO panoptic format) under $DETECTRON2_DATASETS/synthetic;
2. evaluates the untrained model on the held-out split (PQ, AP, mIoU): the baseline;
3. trains configs/synthetic/maskformer2_dinat_tiny_synthetic_panoptic.yaml with train_net.py's
   Trainer; the number of iterations is the config's SOLVER.MAX_ITER, lowered if a timing of
   the first iterations says it would not fit in --budget-minutes;
4. evaluates the trained model;
5. runs demo/demo.py on held-out images and on a generated video;
6. writes <output>/metrics.json and prints a summary.

    python tools/main_job.py [--output output/main_job] [--budget-minutes 8] [--opts KEY VALUE ...]
"""
import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # train_net.py lives at the repository root

import torch  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import mask2former_dinat  # noqa: E402,F401  (registers the model and datasets)
from mask2former_dinat.config import get_cfg  # noqa: E402
from mask2former_dinat.data import synthetic  # noqa: E402
from mask2former_dinat.data.datasets import datasets_root  # noqa: E402
from train_net import Trainer  # noqa: E402

CONFIG = ROOT / "configs" / "synthetic" / "maskformer2_dinat_tiny_synthetic_panoptic.yaml"
logger = logging.getLogger("mask2former_dinat.main_job")


def headline(results):
    """PQ, AP, mIoU out of detectron2's nested results."""
    return {
        "PQ": results.get("panoptic_seg", {}).get("PQ"),
        "AP": results.get("segm", {}).get("AP"),
        "mIoU": results.get("sem_seg", {}).get("mIoU"),
    }


def build_cfg(args, output):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = args.device
    cfg.OUTPUT_DIR = str(output / "train")
    cfg.SEED = args.seed
    return cfg


def seconds_per_iteration(cfg, iterations=3):
    """Wall time of one training iteration (data, forward, backward, step) on a throwaway model."""
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    batches = iter(Trainer.build_train_loader(cfg))
    times = []
    for _ in range(iterations + 1):  # the first one warms up the allocator and the loader
        start = time.perf_counter()
        loss = sum(model(next(batches)).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[iterations // 2]


def evaluate(cfg, model):
    model.eval()
    with torch.no_grad():
        return Trainer.test(cfg, model)


def run_demo(cfg_file, weights, inputs, video, vis_dir, opts):
    demo = [sys.executable, str(ROOT / "demo" / "demo.py"), "--config-file", str(cfg_file)]
    tail = ["--opts", "MODEL.WEIGHTS", str(weights), *opts]
    subprocess.run(demo + ["--input", *map(str, inputs), "--output", str(vis_dir / "images")] + tail, check=True)
    subprocess.run(demo + ["--video-input", str(video), "--output", str(vis_dir / "video.mp4")] + tail, check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "output" / "main_job"), help="where results go")
    parser.add_argument("--budget-minutes", type=float, default=8.0,
                        help="upper bound on training wall time (default 8)")
    parser.add_argument("--num-train", type=int, default=400, help="synthetic training images")
    parser.add_argument("--num-val", type=int, default=50, help="synthetic held-out images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    setup_logger(str(output / "log.txt"), name="mask2former_dinat")
    setup_logger(str(output / "log.txt"), name="detectron2", abbrev_name="d2")
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    data_dir = Path(datasets_root()) / "synthetic"
    synthetic.generate(data_dir, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    logger.info(f"synthetic dataset: {data_dir} ({args.num_train} train, {args.num_val} held-out images)")

    cfg = build_cfg(args, output)
    per_iter = seconds_per_iteration(cfg)
    fits = int(args.budget_minutes * 60 / per_iter)
    if fits < cfg.SOLVER.MAX_ITER:
        logger.warning(f"{per_iter:.2f} s/iteration here: training {fits} instead of {cfg.SOLVER.MAX_ITER} "
                       f"iterations to stay within {args.budget_minutes} minutes")
        cfg.SOLVER.MAX_ITER = fits
    cfg.freeze()

    torch.manual_seed(args.seed)
    untrained = evaluate(cfg, Trainer.build_model(cfg))

    train_start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_minutes = (time.perf_counter() - train_start) / 60
    trained = evaluate(cfg, trainer.model)

    weights = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    vis_dir = output / "visualizations"
    inputs = sorted((data_dir / "val" / "images").glob("*.jpg"))[:8]
    video = synthetic.write_video(output / "synthetic_clip.mp4", num_frames=24)
    run_demo(CONFIG, weights, inputs, video, vis_dir, ["MODEL.DEVICE", args.device, *args.opts])

    metrics = {
        "untrained": headline(untrained),
        "trained": headline(trained),
        "iterations": cfg.SOLVER.MAX_ITER,
        "seconds_per_iteration": round(per_iter, 3),
        "train_minutes": round(train_minutes, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "weights": str(weights),
        "visualizations": str(vis_dir),
        "full_results": {"untrained": untrained, "trained": trained},
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    rows = [("", "PQ", "AP", "mIoU")] + [
        (name, *(f"{metrics[name][k]:.1f}" if metrics[name][k] is not None else "-" for k in ("PQ", "AP", "mIoU")))
        for name in ("untrained", "trained")
    ]
    table = "\n".join(f"{r[0]:<10}{r[1]:>8}{r[2]:>8}{r[3]:>8}" for r in rows)
    print(f"\nHeld-out synthetic split ({args.num_val} images), {cfg.SOLVER.MAX_ITER} iterations in "
          f"{train_minutes:.1f} min on {args.device}:\n{table}\n\nmetrics: {output / 'metrics.json'}\n"
          f"visualizations: {vis_dir}")
    return metrics


if __name__ == "__main__":
    main()
