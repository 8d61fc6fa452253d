"""fit_config_to_datasets: the class count, training mapper, ignore value and evaluated outputs of a
published config follow the datasets-file datasets it names, each change said in one line; datasets
that disagree on classes or formats are refused."""
import pytest
from helpers.configs import load_config, published_config
from helpers.dataset_writers import write_custom_datasets

from mask2former_dinat.data.datasets import register_datasets_file
from mask2former_dinat.data.fit_config import fit_config_to_datasets


@pytest.fixture(scope="module", autouse=True)
def _registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    written = write_custom_datasets(root, splits=("val",), num_images=1)
    with open(written["yaml"], "a") as f:
        f.write("three: {format: sem_seg, images: sem_seg/val/images, labels: sem_seg/val/labels, classes: [a, b, c], ignore_label: 0}\n")
    register_datasets_file(written["yaml"])


def _cfg(config, train, test):
    return load_config(published_config(*config), "DATASETS.TRAIN", f"{tuple(train)}", "DATASETS.TEST", f"{tuple(test)}")


def test_instances_under_the_coco_panoptic_config_get_their_class_count_and_the_lsj_instance_mapper():
    cfg = _cfg(("coco", "panoptic"), ["coco_instances_val"], ["coco_instances_val"])
    changes = fit_config_to_datasets(cfg)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2 and cfg.INPUT.DATASET_MAPPER_NAME == "coco_instance_lsj"
    assert changes == [
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES: 133 in the config does not fit the 2 classes of 'coco_instances_val'; set to 2",
        "INPUT.DATASET_MAPPER_NAME: 'coco_panoptic_lsj' in the config does not fit the coco_instances dataset "
        "'coco_instances_val'; set to 'coco_instance_lsj'",
    ]


def test_panoptic_data_under_a_mask_former_config_keeps_the_mask_former_family():
    cfg = _cfg(("ade20k", "semantic"), ["coco_panoptic_val"], ["coco_panoptic_val"])
    fit_config_to_datasets(cfg)
    assert cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_panoptic" and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 4
    assert cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON  # the ADE20K semantic config evaluates only mIoU: left as it is
    assert not cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON


def test_a_sem_seg_test_set_turns_off_the_outputs_that_need_thing_classes_and_sets_the_ignore_value():
    cfg = _cfg(("coco", "panoptic"), ["three"], ["three"])
    changes = fit_config_to_datasets(cfg)
    test = cfg.MODEL.MASK_FORMER.TEST
    assert (test.SEMANTIC_ON, test.PANOPTIC_ON, test.INSTANCE_ON) == (True, False, False)
    assert cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 0 and cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic"
    assert "MODEL.MASK_FORMER.TEST.PANOPTIC_ON: True in the config does not fit the sem_seg dataset 'three' " \
           "(DATASETS.TEST), which has no thing classes; set to False" in changes


def test_a_config_that_fits_is_left_unchanged():
    cfg = _cfg(("ade20k", "semantic"), ["sem_seg_val"], [])
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    before = cfg.dump()
    assert fit_config_to_datasets(cfg) == [] and cfg.dump() == before


def test_datasets_with_other_classes_or_formats_are_refused():
    with pytest.raises(ValueError, match="datasets 'sem_seg_val' and 'three' have different classes"):
        fit_config_to_datasets(_cfg(("coco", "panoptic"), ["sem_seg_val"], ["three"]))
    with pytest.raises(ValueError, match="DATASETS.TRAIN mixes formats"):
        fit_config_to_datasets(_cfg(("coco", "panoptic"), ["sem_seg_val", "coco_panoptic_val"], []))


def test_a_built_in_dataset_beside_the_datasets_file_ones_is_refused():
    with pytest.raises(ValueError, match="DATASETS.TEST names 'coco_2017_val_panoptic_with_sem_seg' beside datasets of the "
                                         "datasets file"):
        fit_config_to_datasets(load_config(published_config("coco", "panoptic"), "DATASETS.TRAIN", "('three',)"))
