"""InstanceSegEvaluator: COCO mask AP over thing classes, for instance models (contiguous thing
ids) and panoptic models (thing ids among all classes, stuff predictions dropped)."""
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from helpers.dataset_writers import records_by_file, registered_datasets, write_ade20k, write_coco_instances
from helpers.predictions import evaluate_outputs, instances_output

from mask2former_dinat.evaluation import InstanceSegEvaluator

COCO = "coco_2017_val"
ADE_PANOPTIC = "ade20k_panoptic_val"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: {
        COCO: records_by_file(write_coco_instances(root, "val2017")),
        ADE_PANOPTIC: records_by_file(write_ade20k(root, "val")),
    })


def _outputs(records, instances_for):
    """dataset dict -> "instances" output of `instances_for(writer record)`."""

    def output(d):
        record = records[os.path.basename(d["file_name"])]
        return instances_output(instances_for(record), record["instances"][0]["mask"].shape)

    return output


def _evaluate(dataset, records, instances_for, tmp_path):
    evaluator = InstanceSegEvaluator(dataset, output_dir=str(tmp_path))
    return evaluate_outputs(evaluator, dataset, _outputs(records, instances_for))


def test_perfect_prediction_scores_100_and_only_segm_is_evaluated(datasets, tmp_path):
    result = _evaluate(COCO, datasets[COCO], lambda r: r["instances"], tmp_path)
    assert set(result) == {"segm"}
    assert result["segm"]["AP"] == pytest.approx(100.0)
    assert result["segm"]["AP-person"] == pytest.approx(100.0)
    assert os.path.isfile(tmp_path / "coco_instances_results.json")


def test_missed_instances_give_hand_computed_ap(datasets, tmp_path):
    records = datasets[COCO]
    first = sorted(records)[0]
    person = 0

    def instances(record):
        if os.path.basename(record["file_name"]) == first:
            return [x for x in record["instances"] if x["category_id"] != person]
        return record["instances"]

    result = _evaluate(COCO, records, instances, tmp_path)["segm"]
    # Person: 4 non-crowd instances, the 2 of the second image found (exact masks, no false
    # positives): precision 1 up to recall 0.5, then nothing. COCO interpolates precision at
    # 101 recall points 0, 0.01, ..., 1: 51 of them are <= 0.5, so AP = 51 / 101 at every IoU
    # threshold. Car: all found, AP 1. Categories without ground truth do not count.
    assert result["AP-person"] == pytest.approx(100 * 51 / 101)
    assert result["AP-car"] == pytest.approx(100.0)
    assert result["AP"] == pytest.approx(100 * (51 / 101 + 1) / 2)
    assert result["AP50"] == pytest.approx(result["AP"])


def test_panoptic_model_classes_map_back_through_thing_ids_and_stuff_is_dropped(datasets, tmp_path):
    # ADE20K panoptic: the 100 thing classes are spread over contiguous ids 0..149 (person is
    # 12, bed 7), which detectron2's COCOEvaluator rejects.
    meta = MetadataCatalog.get(ADE_PANOPTIC)
    stuff = next(i for i in range(150) if i not in meta.thing_dataset_id_to_contiguous_id.values())

    def instances(record):
        wall = {"category_id": stuff, "mask": record["semantic"] == stuff}  # a stuff "instance"
        return [wall] + record["instances"]  # scored highest

    result = _evaluate(ADE_PANOPTIC, datasets[ADE_PANOPTIC], instances, tmp_path)
    assert result["segm"]["AP"] == pytest.approx(100.0)

    with pytest.raises(AssertionError):
        evaluate_outputs(
            COCOEvaluator(ADE_PANOPTIC, tasks=("segm",), output_dir=str(tmp_path), use_fast_impl=False),
            ADE_PANOPTIC,
            _outputs(datasets[ADE_PANOPTIC], instances),
        )


def test_no_predictions_give_nan_not_an_error(datasets, tmp_path):
    result = _evaluate(COCO, datasets[COCO], lambda r: [], tmp_path)
    assert result["segm"]["AP"] != result["segm"]["AP"]  # NaN


def test_dataset_without_thing_map_is_rejected(tmp_path):
    name = "m2f_test_no_thing_map"
    DatasetCatalog.register(name, lambda: [])
    try:
        json_file = tmp_path / "gt.json"
        json_file.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
        MetadataCatalog.get(name).set(json_file=str(json_file), thing_classes=["a"])
        with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
            InstanceSegEvaluator(name)
        MetadataCatalog.get(name).set(thing_dataset_id_to_contiguous_id={2: 0})
        with pytest.raises(ValueError, match=r"\[2\]"):
            InstanceSegEvaluator(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
