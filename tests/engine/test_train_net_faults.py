"""train_net.py meeting faults, end to end on CPU: a truncated checkpoint for --eval-only, training
that diverges. Each ends with one message naming the problem and what to do."""
import subprocess
import sys

import pytest
import torch
from helpers.configs import REPO, published_config, tiny_model_opts
from helpers.dataset_writers import datasets_env, write_ade20k

pytestmark = pytest.mark.slow

CONFIG = REPO / published_config("ade20k", "semantic")
TINY = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    *tiny_model_opts(num_heads=(1, 1, 2, 2), train_num_points=64, DROP_PATH_RATE=0.0),
    "INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.CROP.SIZE", "(48, 48)",
    "INPUT.SIZE_DIVISIBILITY", "-1", "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2", "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_ade20k(root, "train")
    write_ade20k(root, "val")
    return root


def _train_net(datasets, output_dir, *args, opts=()):
    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(CONFIG), *args, *TINY,
           "OUTPUT_DIR", str(output_dir), *opts]
    return subprocess.run(cmd, cwd=REPO, env=datasets_env(datasets), capture_output=True, text=True, timeout=300)


def _last_line(text):
    return text.strip().splitlines()[-1]


def test_eval_only_with_a_truncated_checkpoint_ends_in_one_message_naming_the_file(datasets, tmp_path):
    weights = tmp_path / "model_final.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, weights)
    weights.write_bytes(weights.read_bytes()[:3000])
    run = _train_net(datasets, tmp_path / "out", "--eval-only", opts=["MODEL.WEIGHTS", str(weights)])
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert _last_line(run.stderr).startswith(f"train_net.py: error: {weights} is not a readable PyTorch checkpoint")
    assert "truncated or corrupt" in _last_line(run.stderr)


@pytest.mark.parametrize(
    "lr, what",
    [
        ("1e3", "the optimizer step made these parameters infinite or NaN: backbone."),
        ("1e15", "the outputs of backbone, sem_seg_head became infinite or NaN, and the step failed with ValueError"),
    ],
    ids=["weights", "outputs"],
)
def test_divergence_names_iteration_and_what_diverged_and_keeps_the_last_good_checkpoint(datasets, tmp_path, lr, what):
    # A learning rate far too high: AdamW makes weights NaN (1e3) or so large that the model's
    # outputs overflow and the matcher meets a NaN cost (1e15), in the first steps.
    out = tmp_path / "out"
    run = _train_net(datasets, out, opts=[
        "SOLVER.BASE_LR", lr, "SOLVER.CLIP_GRADIENTS.ENABLED", "False", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()",
    ])
    assert run.returncode == 1, run.stderr[-3000:]
    message = _last_line(run.stderr)
    assert message.startswith("train_net.py: error: Training diverged at iteration ")
    iteration = int(message.split("iteration ")[1].split(":")[0])
    assert iteration >= 1 and what in message
    last = (out / "last_checkpoint").read_text()
    assert last == f"model_{iteration - 1:07d}.pth"
    assert f"The last good checkpoint is {out / last}, and nothing was saved after it" in message
    assert not (out / f"model_{iteration:07d}.pth").exists() and not (out / "model_final.pth").exists()
    state = torch.load(out / last, weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
