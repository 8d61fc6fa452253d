"""detectron2's SemSegEvaluator on this project's datasets (ADE20K-150 semantic, written in
its real format): mIoU of a perfect and of a known partial prediction."""
import os

import numpy as np
import pytest
from detectron2.evaluation import SemSegEvaluator
from helpers.dataset_writers import records_by_file, registered_datasets, write_ade20k
from helpers.predictions import evaluate_outputs, sem_seg_output

DATASET = "ade20k_sem_seg_val"
NUM_CLASSES = 150


@pytest.fixture(scope="module")
def ade20k(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: records_by_file(write_ade20k(root, "val")))


def _evaluate(records, labels_for, tmp_path):
    evaluator = SemSegEvaluator(DATASET, distributed=True, output_dir=str(tmp_path))
    return evaluate_outputs(
        evaluator, DATASET, lambda d: sem_seg_output(labels_for(records[os.path.basename(d["file_name"])]), NUM_CLASSES)
    )["sem_seg"]


def test_perfect_prediction_scores_100(ade20k, tmp_path):
    result = _evaluate(ade20k, lambda r: r["semantic"], tmp_path)
    assert result["mIoU"] == pytest.approx(100.0)
    assert result["pACC"] == pytest.approx(100.0)
    assert os.path.isfile(tmp_path / "sem_seg_predictions.json")


def test_relabelled_class_lowers_miou_by_the_hand_computed_amount(ade20k, tmp_path):
    first, second = sorted(ade20k)
    a, b = 7, 12  # "bed" pixels of the first image are predicted as "person"

    def labels(record):
        sem = record["semantic"].copy()
        if os.path.basename(record["file_name"]) == first:
            sem[sem == a] = b
        return sem

    result = _evaluate(ade20k, labels, tmp_path)
    gt = {name: ade20k[name]["semantic"] for name in (first, second)}
    n_a1, n_a2 = (gt[first] == a).sum(), (gt[second] == a).sum()
    n_b = sum((g == b).sum() for g in gt.values())
    classes = set(np.unique(gt[first])) | set(np.unique(gt[second]))
    classes.discard(255)
    assert n_a1 > 0 and n_a2 > 0 and len(classes) == 5
    # IoU(a) = TP / (GT + pred - TP) = n_a2 / (n_a1 + n_a2); IoU(b) = n_b / (n_b + n_a1); others 1.
    expected = (len(classes) - 2 + n_a2 / (n_a1 + n_a2) + n_b / (n_b + n_a1)) / len(classes)
    assert result["mIoU"] == pytest.approx(100 * expected)
    labelled = sum((g != 255).sum() for g in gt.values())
    assert result["pACC"] == pytest.approx(100 * (labelled - n_a1) / labelled)
