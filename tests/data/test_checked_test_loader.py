"""Evaluation (train_net.py --eval-only, CPU, tiny model) over a test set with a missing and an
unreadable image: each is named; with --skip-bad evaluation goes on without them, counts them,
and scores the rest exactly as a test set of only the readable image."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers.configs import REPO, published_config, tiny_model_opts
from helpers.dataset_writers import ade20k_scenes, datasets_env, write_ade20k

pytestmark = pytest.mark.slow

CONFIG = REPO / published_config("ade20k", "semantic")
TINY = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SEED", "3",  # the seed fixes the random weights
    *tiny_model_opts(num_heads=(1, 1, 2, 2)),
    "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0",
    # A test set that lists its images (a json), scored on the semantic output (mIoU). (The
    # semantic set is built by listing the image folder: detectron2 drops a missing image there.)
    "DATASETS.TEST", "('ade20k_panoptic_val',)",
]
DATASET = "ade20k_panoptic_val"
IMAGES = "ADEChallengeData2016/images/validation"


def _val_set(root, scenes):
    write_ade20k(root, "val", scenes=scenes)
    return root


@pytest.fixture
def broken(tmp_path):
    """Three validation images: the first readable, the second deleted, the third not an image."""
    root = _val_set(tmp_path / "broken", ade20k_scenes(3))
    missing, garbage = root / IMAGES / "ADE_val_00000002.jpg", root / IMAGES / "ADE_val_00000003.jpg"
    missing.unlink()
    garbage.write_bytes(b"this is not a JPEG file" * 10)
    return root, missing, garbage


def _eval(datasets, output_dir, *args):
    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(CONFIG), "--eval-only", *args, *TINY,
           "OUTPUT_DIR", str(output_dir)]
    return subprocess.run(cmd, cwd=REPO, env=datasets_env(datasets), capture_output=True, text=True, timeout=300)


def _last_line(run):
    return run.stderr.strip().splitlines()[-1]


def test_missing_test_image_is_named_before_inference_starts(broken, tmp_path):
    root, missing, _ = broken
    run = _eval(root, tmp_path / "out")
    assert run.returncode == 1
    assert _last_line(run) == (
        f"train_net.py: error: 1 of the 3 test images of dataset {DATASET} are missing: {missing}. "
        "Restore them (is $DETECTRON2_DATASETS the right folder?), or pass --skip-bad to evaluate without them."
    )
    assert "Start inference" not in run.stdout + run.stderr and "Traceback" not in run.stderr


def test_unreadable_test_image_is_named(broken, tmp_path):
    root, missing, garbage = broken
    _val_set(tmp_path / "only_garbage", ade20k_scenes(3))  # restore the missing one: only the garbage remains
    root = tmp_path / "only_garbage"
    (root / IMAGES / garbage.name).write_bytes(garbage.read_bytes())
    run = _eval(root, tmp_path / "out")
    assert run.returncode == 1
    assert _last_line(run).startswith(
        f"train_net.py: error: Test image {root / IMAGES / garbage.name} of dataset {DATASET} cannot be read ("
    )
    assert _last_line(run).endswith("Replace or remove it, or pass --skip-bad to evaluate without it.")


def test_skip_bad_evaluates_the_readable_images_as_if_the_others_were_not_there(broken, tmp_path):
    root, missing, garbage = broken
    run = _eval(root, tmp_path / "skipped", "--skip-bad")
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert f"1 of the 3 test images of {DATASET} are missing and left out (--skip-bad): {missing}" in log
    assert f"Skipped test image {garbage}: " in log
    assert (
        f"Evaluation of {DATASET} left out 2 of its 3 images that could not be read (--skip-bad): "
        f"{missing}, {garbage}" in log
    )

    alone = _val_set(tmp_path / "alone", ade20k_scenes(1))  # the same first image, alone
    reference = _eval(alone, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    skipped = torch.load(tmp_path / "skipped" / "inference" / "sem_seg_evaluation.pth", weights_only=False)
    expected = torch.load(tmp_path / "reference" / "inference" / "sem_seg_evaluation.pth", weights_only=False)
    assert skipped.keys() == expected.keys()
    for key, value in expected.items():
        assert skipped[key] == value or (math.isnan(value) and math.isnan(skipped[key])), key
    # The predictions behind the scores: the readable image only, drawn the same in both runs.
    predicted = _predictions(tmp_path / "skipped", root)
    assert predicted == _predictions(tmp_path / "reference", alone) and len(predicted) > 0
    assert {name for name, _, _ in predicted} == {"ADE_val_00000001.jpg"}


def _predictions(output_dir, root):
    """SemSegEvaluator's per-image, per-class RLEs, with file names relative to the image folder."""
    entries = json.loads((output_dir / "inference" / "sem_seg_predictions.json").read_text())
    return sorted(
        (os.path.relpath(e["file_name"], root / IMAGES), e["category_id"], e["segmentation"]["counts"]) for e in entries
    )
