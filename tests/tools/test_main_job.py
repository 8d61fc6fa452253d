"""tools/main_job.py (`make demo`) end to end at toy scale: data, baseline, training, evaluation,
demo outputs and the metrics summary, run as the command line runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_main_job_trains_evaluates_and_writes_visualizations_and_metrics(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    cmd = [sys.executable, str(REPO / "tools" / "main_job.py"), "--output", str(out), "--num-train", "6",
           "--num-val", "3", "--opts", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2",
           "DATALOADER.NUM_WORKERS", "0", "MODEL.DINAT.DEPTHS", "[1, 1, 1, 1]",
           "MODEL.DINAT.DILATIONS", "[[1], [1], [1], [1]]", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    assert (tmp_path / "datasets" / "synthetic" / "val" / "panoptic.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 3
    for stage in ("untrained", "trained"):
        assert set(metrics[stage]) == {"PQ", "AP", "mIoU"}
        assert 0 <= metrics[stage]["mIoU"] <= 100 and 0 <= metrics[stage]["PQ"] <= 100
    assert Path(metrics["weights"]).exists()
    images = sorted((out / "visualizations" / "images").glob("*.jpg"))
    assert len(images) == 3 and cv2.imread(str(images[0])).shape == (128, 128, 3)
    video = cv2.VideoCapture(str(out / "visualizations" / "video.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 24
    assert "Held-out synthetic split (3 images), 3 iterations" in done.stdout
