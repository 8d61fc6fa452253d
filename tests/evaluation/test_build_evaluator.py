"""build_evaluator: the evaluators for each dataset type and model output flags."""
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from mask2former_dinat.evaluation.cityscapes_evaluation import CityscapesInstanceEvaluator
from helpers.configs import published_config, published_values
from helpers.dataset_writers import registered_datasets, write_ade20k, write_cityscapes, write_coco

from mask2former_dinat.config import get_cfg
from mask2former_dinat.evaluation import InstanceSegEvaluator, build_evaluator

PANOPTIC, INSTANCE, SEMANTIC = COCOPanopticEvaluator, InstanceSegEvaluator, SemSegEvaluator

# The published configs' test datasets and what their outputs are scored with.
PUBLISHED = {
    published_config("ade20k", "semantic"): [SEMANTIC],
    published_config("ade20k", "panoptic"): [PANOPTIC, INSTANCE, SEMANTIC],
    published_config("ade20k", "instance"): [INSTANCE],
    published_config("coco", "panoptic"): [PANOPTIC, INSTANCE, SEMANTIC],
    published_config("coco", "instance"): [INSTANCE],
    published_config("cityscapes", "semantic"): [CityscapesSemSegEvaluator],
    published_config("cityscapes", "instance"): [CityscapesInstanceEvaluator],
    published_config("cityscapes", "panoptic"): [
        PANOPTIC, CityscapesInstanceEvaluator, CityscapesSemSegEvaluator,
    ],
}


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    yield from registered_datasets(
        tmp_path_factory, lambda root: [write_coco(root, "val2017"), write_ade20k(root, "val"), write_cityscapes(root, "val")]
    )


def _cfg(tmp_path, panoptic=False, instance=False, semantic=False):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    test = cfg.MODEL.MASK_FORMER.TEST
    test.PANOPTIC_ON, test.INSTANCE_ON, test.SEMANTIC_ON = panoptic, instance, semantic
    return cfg


def _types(evaluator):
    members = evaluator._evaluators if isinstance(evaluator, DatasetEvaluators) else [evaluator]
    return [type(e) for e in members]


@pytest.mark.parametrize("config", sorted(PUBLISHED))
def test_published_configs_get_their_evaluators(config, datasets_root, reference_dir, tmp_path):
    values = published_values(config)
    cfg = _cfg(
        tmp_path,
        values["MODEL.MASK_FORMER.TEST.PANOPTIC_ON"],
        values["MODEL.MASK_FORMER.TEST.INSTANCE_ON"],
        values["MODEL.MASK_FORMER.TEST.SEMANTIC_ON"],
    )
    (dataset,) = values["DATASETS.TEST"]
    assert _types(build_evaluator(cfg, dataset)) == PUBLISHED[config]


def test_flags_choose_the_panoptic_dataset_evaluators(datasets_root, tmp_path):
    dataset = "coco_2017_val_panoptic_with_sem_seg"
    assert _types(build_evaluator(_cfg(tmp_path, panoptic=True), dataset)) == [PANOPTIC]
    assert _types(build_evaluator(_cfg(tmp_path, instance=True, semantic=True), dataset)) == [INSTANCE, SEMANTIC]
    with pytest.raises(ValueError, match="PANOPTIC_ON, INSTANCE_ON and SEMANTIC_ON"):
        build_evaluator(_cfg(tmp_path), dataset)


def test_outputs_go_to_output_dir_inference_unless_a_folder_is_given(datasets_root, tmp_path):
    evaluator = build_evaluator(_cfg(tmp_path, semantic=True), "ade20k_sem_seg_val")
    assert evaluator._output_dir == os.path.join(str(tmp_path), "inference")
    evaluator = build_evaluator(_cfg(tmp_path, semantic=True), "ade20k_sem_seg_val", str(tmp_path / "tta"))
    assert evaluator._output_dir == str(tmp_path / "tta")


def test_missing_model_output_is_an_error(datasets_root, tmp_path):
    with pytest.raises(ValueError, match="INSTANCE_ON is False"):
        build_evaluator(_cfg(tmp_path, semantic=True), "coco_2017_val")
    with pytest.raises(ValueError, match="SEMANTIC_ON is False"):
        build_evaluator(_cfg(tmp_path, instance=True), "cityscapes_fine_sem_seg_val")


@pytest.mark.parametrize("evaluator_type", ["lvis", None])
def test_unknown_evaluator_type_is_an_error(evaluator_type, tmp_path):
    name = "m2f_test_unknown_evaluator_type"
    DatasetCatalog.register(name, lambda: [])
    if evaluator_type is not None:
        MetadataCatalog.get(name).set(evaluator_type=evaluator_type)
    try:
        with pytest.raises(ValueError, match=f"evaluator_type {evaluator_type!r}.*sem_seg"):
            build_evaluator(_cfg(tmp_path, semantic=True), name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
