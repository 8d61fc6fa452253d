"""detectron2's Cityscapes evaluators (cityscapesscripts) on this project's Cityscapes datasets
(written in the real gtFine format): class IoU and instance AP, perfect and partial."""
import os

import pytest
from detectron2.evaluation import CityscapesSemSegEvaluator
from helpers.dataset_writers import records_by_file, registered_datasets, write_cityscapes
from mask2former_dinat.evaluation.cityscapes_evaluation import CityscapesInstanceEvaluator
from helpers.predictions import evaluate_outputs, instances_output, sem_seg_output

SEMANTIC = "cityscapes_fine_sem_seg_val"
INSTANCE = "cityscapes_fine_instance_seg_val"
ROAD, CAR = 0, 13  # trainIds
PERSON = 0  # index among the 8 thing classes


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: records_by_file(write_cityscapes(root, "val", panoptic=False)))


def _semantic(records, labels_for):
    def output(d):
        return sem_seg_output(labels_for(records[os.path.basename(d["file_name"])]), 19)

    return evaluate_outputs(CityscapesSemSegEvaluator(SEMANTIC), SEMANTIC, output)["sem_seg"]


def _instances(records, instances_for):
    def output(d):
        record = records[os.path.basename(d["file_name"])]
        return instances_output(instances_for(record), record["semantic"].shape)

    return evaluate_outputs(CityscapesInstanceEvaluator(INSTANCE), INSTANCE, output)["segm"]


def test_perfect_semantic_prediction_scores_100(cityscapes):
    assert _semantic(cityscapes, lambda r: r["semantic"])["IoU"] == pytest.approx(100.0)


def test_cars_predicted_as_road_give_hand_computed_class_iou(cityscapes):
    first, second = sorted(cityscapes)

    def labels(record):
        sem = record["semantic"].copy()
        if os.path.basename(record["file_name"]) == first:
            sem[sem == CAR] = ROAD
        return sem

    result = _semantic(cityscapes, labels)
    gt = [cityscapes[name]["semantic"] for name in (first, second)]
    car1, car2 = (gt[0] == CAR).sum(), (gt[1] == CAR).sum()
    road = sum((g == ROAD).sum() for g in gt)
    classes = set().union(*[set(g[g != 255].tolist()) for g in gt])
    assert classes == {ROAD, 10, 11, CAR}
    # IoU(car) = car2 / (car1 + car2); IoU(road) = road / (road + car1); sky, person: 1.
    expected = (2 + car2 / (car1 + car2) + road / (road + car1)) / 4
    assert result["IoU"] == pytest.approx(100 * expected, abs=1e-6)


def test_perfect_instance_prediction_scores_100(cityscapes):
    result = _instances(cityscapes, lambda r: r["instances"])
    assert result["AP"] == pytest.approx(100.0)
    assert result["AP50"] == pytest.approx(100.0)


def test_missed_person_gives_hand_computed_ap(cityscapes):
    first = sorted(cityscapes)[0]

    def instances(record):
        if os.path.basename(record["file_name"]) == first:
            return [x for x in record["instances"] if x["category_id"] != PERSON]
        return record["instances"]

    result = _instances(cityscapes, instances)
    # Person: 2 instances, 1 found exactly. Cityscapes integrates the precision-recall curve
    # stepwise over the points (recall 0.5, precision 1) and (0, 1): AP = 0.5. Car: AP 1.
    # Classes without ground truth are left out of the mean.
    assert result["AP"] == pytest.approx(100 * (0.5 + 1) / 2)
    assert result["AP50"] == pytest.approx(100 * (0.5 + 1) / 2)


def test_instance_evaluation_leaves_no_scratch_files_in_the_working_directory(cityscapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _instances(cityscapes, lambda r: r["instances"])
    assert list(tmp_path.iterdir()) == []  # cityscapesscripts writes matches.json into the cwd
