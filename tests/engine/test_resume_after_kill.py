"""Training killed with SIGKILL (between steps, in the middle of writing a checkpoint) resumes
with --resume from the last complete checkpoint and continues exactly: the losses of the
iterations after the resume equal those of an uninterrupted run (CPU, same seed, 0 workers)."""
import json
import subprocess
import sys

import pytest
import torch
from helpers.configs import REPO, published_config, tiny_model_opts
from helpers.dataset_writers import datasets_env, make_scene, write_ade20k

pytestmark = pytest.mark.slow

DRIVER = REPO / "tests" / "helpers" / "train_with_faults.py"
CONFIG = REPO / published_config("ade20k", "semantic")
MAX_ITER = 6
TINY = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SEED", "7",
    *tiny_model_opts(num_heads=(1, 1, 2, 2), train_num_points=64, DROP_PATH_RATE=0.1),
    "INPUT.MIN_SIZE_TRAIN", "(48, 64)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.CROP.SIZE", "(48, 48)",
    "INPUT.SIZE_DIVISIBILITY", "-1",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", "2",
    "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Five training images, landscape and portrait: batches are grouped by orientation, so
    samples wait in the groups across iterations (and across a resume)."""
    root = tmp_path_factory.mktemp("datasets")
    scenes = [make_scene(*((48, 64) if i % 3 else (64, 48)), stuff=(1, 4), things=(13, 8), seed=i) for i in range(5)]
    write_ade20k(root, "train", scenes=scenes)
    return root


def _train(datasets, output_dir, losses, *fault, resume=False):
    cmd = [
        sys.executable, str(DRIVER), str(losses), *fault, "--",
        "--config-file", str(CONFIG), *(["--resume"] if resume else []), *TINY, "OUTPUT_DIR", str(output_dir),
    ]
    return subprocess.run(cmd, cwd=REPO, env=datasets_env(datasets), capture_output=True, text=True, timeout=300)


def _losses(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_between_steps_and_during_a_save_resumes_with_the_uninterrupted_losses(datasets, tmp_path):
    reference = tmp_path / "reference.jsonl"
    done = _train(datasets, tmp_path / "uninterrupted", reference)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {r["iteration"]: r["losses"] for r in _losses(reference)}
    assert sorted(expected) == list(range(MAX_ITER))

    out, log = tmp_path / "killed", tmp_path / "killed.jsonl"
    # 1. Killed after iteration 2, one step after the checkpoint of iteration 1.
    first = _train(datasets, out, log, "--kill-after-step", "2")
    assert first.returncode == -9, first.stderr[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"

    # 2. Resumed at iteration 2, killed half-way through writing the checkpoint of iteration 3.
    second = _train(datasets, out, log, "--kill-in-save", "1", resume=True)
    assert second.returncode == -9, second.stderr[-3000:]
    assert "Starting training from iteration 2" in second.stdout + second.stderr
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (out / "model_0000003.pth").exists()
    assert list(out.glob(".model_0000003.pth.*.tmp"))  # the partial file, never under the real name

    # 3. Resumed at iteration 2 again, trained to the end.
    third = _train(datasets, out, log, resume=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Starting training from iteration 2" in third.stdout + third.stderr
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == MAX_ITER - 1
    assert not list(out.glob(".*.tmp"))  # the resume removed the partial save

    runs = _losses(log)
    assert [r["iteration"] for r in runs] == [0, 1, 2, 2, 2, 3, 4, 5]  # the save at 3 precedes its log line
    for r in runs:
        assert r["losses"] == expected[r["iteration"]], r["iteration"]
