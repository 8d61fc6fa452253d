"""train_net.py end to end on CPU: a tiny DiNAT Mask2Former trained on a small ADE20K-format
dataset, checkpointed, resumed, evaluated, and trained by two gloo processes."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
from helpers.configs import REPO, published_config, tiny_model_opts
from helpers.dataset_writers import datasets_env, write_ade20k


pytestmark = pytest.mark.slow

CONFIG = REPO / published_config("ade20k", "semantic")
# A published config made tiny: small DiNAT, small heads, 64-pixel crops, no pre-trained weights.
TINY = [
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    *tiny_model_opts(num_heads=(1, 1, 2, 2), train_num_points=256, DROP_PATH_RATE=0.0),
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.CROP.SIZE", "(64, 64)",
    "INPUT.SIZE_DIVISIBILITY", "-1",
    "INPUT.COLOR_AUG_SSD", "False",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
    "TEST.EVAL_PERIOD", "0",
    "DATALOADER.NUM_WORKERS", "0",
]


def _train_net(datasets, output_dir, *args, opts=(), processes=1, timeout=300):
    env = datasets_env(datasets)
    if processes > 1:
        env["OMP_NUM_THREADS"] = "1"  # the processes share the machine's cores
    cmd = [
        sys.executable, str(REPO / "train_net.py"), "--config-file", str(CONFIG),
        "--num-gpus", str(processes), "--dist-url", "auto", *args,
        *TINY, "OUTPUT_DIR", str(output_dir), *opts,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _metrics(output_dir):
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def _checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _optimizer_steps(checkpoint):
    return {int(s["step"]) for s in checkpoint["trainer"]["_trainer"]["optimizer"]["state"].values()}


def _sem_seg_results(output_dir):
    return torch.load(output_dir / "inference" / "sem_seg_evaluation.pth", weights_only=False)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_ade20k(root, "train")
    write_ade20k(root, "val")
    return root


@pytest.fixture(scope="module")
def first_run(datasets, tmp_path_factory):
    """One training iteration, without evaluation (no test datasets)."""
    output_dir = tmp_path_factory.mktemp("first_run")
    log = _train_net(datasets, output_dir, opts=["SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()"])
    return output_dir, log


def test_training_writes_checkpoint_metrics_and_events(first_run):
    output_dir, log = first_run
    assert (output_dir / "last_checkpoint").read_text() == "model_final.pth"
    checkpoint = _checkpoint(output_dir / "model_final.pth")
    assert checkpoint["iteration"] == 0
    assert _optimizer_steps(checkpoint) == {1}
    assert "total_loss" in _metrics(output_dir)[-1]
    assert list(output_dir.glob("events.out.tfevents.*"))
    assert (output_dir / "config.yaml").is_file()
    assert "Optimizer AdamWWithFullModelGradientClip" in log


def test_resume_continues_iteration_optimizer_and_schedule(first_run, datasets, tmp_path):
    output_dir = tmp_path / "resumed"
    shutil.copytree(first_run[0], output_dir)
    log = _train_net(datasets, output_dir, "--resume", opts=["SOLVER.MAX_ITER", "2"])
    assert "Starting training from iteration 1" in log
    checkpoint = _checkpoint(output_dir / "model_final.pth")
    assert checkpoint["iteration"] == 1
    assert _optimizer_steps(checkpoint) == {2}  # a fresh optimizer would be at step 1
    assert checkpoint["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 2
    # Iteration 1 of the resumed 2-iteration poly schedule: lr = 1e-4 * (1 - 1/2) ** 0.9.
    lrs = [m["lr"] for m in _metrics(output_dir) if m.get("iteration") == 1 and "lr" in m]
    assert lrs == [pytest.approx(1e-4 * 0.5**0.9)]
    # Training ends with an evaluation of the test set.
    assert 0.0 <= _sem_seg_results(output_dir)["mIoU"] <= 100.0
    assert any("sem_seg/mIoU" in m for m in _metrics(output_dir))


def test_eval_only_loads_weights_and_evaluates_with_and_without_tta(first_run, datasets, tmp_path):
    weights = first_run[0] / "model_final.pth"
    tta = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "128"]
    log = _train_net(datasets, tmp_path, "--eval-only", opts=["MODEL.WEIGHTS", str(weights), *tta])
    assert "fits the model" in log
    assert log.count("copypaste: mIoU") == 2
    assert "test-time augmentation" in log
    assert 0.0 <= _sem_seg_results(tmp_path)["mIoU"] <= 100.0
    tta_results = torch.load(tmp_path / "inference_TTA" / "sem_seg_evaluation.pth", weights_only=False)
    assert 0.0 <= tta_results["mIoU"] <= 100.0
    assert not list(tmp_path.glob("*.pth"))


def test_two_cpu_processes_train_with_gloo(datasets, tmp_path):
    log = _train_net(datasets, tmp_path, processes=2, opts=["SOLVER.MAX_ITER", "2"], timeout=400)
    assert "World size: 2" in log
    checkpoint = _checkpoint(tmp_path / "model_final.pth")
    assert checkpoint["iteration"] == 1 and _optimizer_steps(checkpoint) == {2}
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    assert 0.0 <= _sem_seg_results(tmp_path)["mIoU"] <= 100.0
