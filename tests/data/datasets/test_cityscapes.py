"""Cityscapes registrations (detectron2's loaders) read a gtFine tree written in the real
formats, and the panoptic files made by cityscapesscripts."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from helpers.dataset_writers import registered_datasets, write_cityscapes
from panopticapi.utils import rgb2id

import mask2former_dinat  # noqa: F401


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: write_cityscapes(root, "val"))


def _by_file(records):
    return sorted(records, key=lambda r: r["file_name"])


def test_cityscapes_semantic_records_point_at_train_id_labels(cityscapes):
    records = _by_file(DatasetCatalog.get("cityscapes_fine_sem_seg_val"))
    assert len(records) == 2
    for rec, exp in zip(records, cityscapes["records"]):
        assert rec["file_name"] == exp["file_name"]
        np.testing.assert_array_equal(utils.read_image(rec["sem_seg_file_name"]), exp["semantic"])


def test_cityscapes_instance_records_have_the_8_thing_classes_and_their_masks(cityscapes):
    records = _by_file(DatasetCatalog.get("cityscapes_fine_instance_seg_val"))
    assert len(records) == 2
    for rec, exp in zip(records, cityscapes["records"]):
        h, w = rec["height"], rec["width"]
        got = []
        for a in rec["annotations"]:
            segm = a["segmentation"]
            mask = (
                mask_util.decode(segm).astype(bool)
                if isinstance(segm, dict)
                else mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, h, w))).astype(bool)
            )
            got.append((a["category_id"], bool(a["iscrowd"]), mask.tobytes()))
        want = [(i["category_id"], bool(i["iscrowd"]), i["mask"].tobytes()) for i in exp["instances"]]
        assert sorted(got) == sorted(want)


def test_cityscapes_panoptic_records_use_train_ids_and_crowd_flags(cityscapes):
    records = _by_file(DatasetCatalog.get("cityscapes_fine_panoptic_val"))
    assert len(records) == 2
    for rec, exp in zip(records, cityscapes["records"]):
        ids = rgb2id(utils.read_image(rec["pan_seg_file_name"], "RGB"))
        got = sorted((s["category_id"], s["iscrowd"], (ids == s["id"]).tobytes()) for s in rec["segments_info"])
        want = sorted((s["category_id"], s["iscrowd"], s["mask"].tobytes()) for s in exp["panoptic"])
        assert got == want
        np.testing.assert_array_equal(utils.read_image(rec["sem_seg_file_name"]), exp["semantic"])
