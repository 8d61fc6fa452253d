"""detectron2's COCOPanopticEvaluator (panopticapi) on this project's COCO and Cityscapes
panoptic datasets (written in their real formats): PQ of perfect and known partial predictions."""
import os

import pytest
from detectron2.evaluation import COCOPanopticEvaluator
from helpers.dataset_writers import records_by_file, registered_datasets, write_cityscapes, write_coco_panoptic
from helpers.predictions import evaluate_outputs, panoptic_output

COCO_DATASET = "coco_2017_val_panoptic_with_sem_seg"
CITYSCAPES_DATASET = "cityscapes_fine_panoptic_val"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: {
        COCO_DATASET: records_by_file(write_coco_panoptic(root, "val2017")),
        CITYSCAPES_DATASET: records_by_file(write_cityscapes(root, "val")),
    })


def _evaluate(dataset, records, segments_for, tmp_path):
    def output(d):
        record = records[os.path.basename(d["file_name"])]
        return panoptic_output(segments_for(record), record["semantic"].shape)

    return evaluate_outputs(COCOPanopticEvaluator(dataset, str(tmp_path)), dataset, output)["panoptic_seg"]


def test_perfect_coco_prediction_scores_100(datasets, tmp_path):
    result = _evaluate(COCO_DATASET, datasets[COCO_DATASET], lambda r: r["segments"], tmp_path)
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert result[key] == pytest.approx(100.0), key
    assert os.path.isfile(tmp_path / "predictions.json")


def test_missed_thing_gives_hand_computed_pq(datasets, tmp_path):
    records = datasets[COCO_DATASET]
    first = sorted(records)[0]
    car = 2  # contiguous id of "car"; every image has one car

    def segments(record):
        keep = record["segments"]
        if os.path.basename(record["file_name"]) == first:
            keep = [s for s in keep if s["category_id"] != car]
        return keep

    result = _evaluate(COCO_DATASET, records, segments, tmp_path)
    # Categories: person, car (things), two stuff classes. The car has 1 TP (IoU 1) and 1 FN:
    # PQ(car) = 1 / (1 + 0.5 * 1) = 2/3; every other category has PQ 1.
    assert result["PQ"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert result["PQ_th"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result["PQ_st"] == pytest.approx(100.0)
    assert result["SQ"] == pytest.approx(100.0)
    assert result["RQ"] == pytest.approx(result["PQ"])


def test_perfect_cityscapes_prediction_scores_100(datasets, tmp_path):
    def segments(record):  # Cityscapes panoptic: contiguous id = trainId; things are trainIds 11..18
        return [dict(s, isthing=s["category_id"] >= 11) for s in record["panoptic"]]

    result = _evaluate(CITYSCAPES_DATASET, datasets[CITYSCAPES_DATASET], segments, tmp_path)
    assert result["PQ"] == pytest.approx(100.0)
    assert result["PQ_th"] == pytest.approx(100.0)
