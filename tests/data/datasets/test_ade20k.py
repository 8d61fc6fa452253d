"""ADE20K registrations read what the prepare scripts write: semantic PNGs (0..149, 255),
panoptic PNG + JSON, COCO-format instance JSON over the 100 things."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from helpers.dataset_writers import registered_datasets, write_ade20k
from panopticapi.utils import rgb2id

import mask2former_dinat  # noqa: F401
from mask2former_dinat.data.datasets.ade20k_categories import ADE20K_THING_IDS


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: write_ade20k(root, "val"))


def test_ade20k_semantic_records_pair_images_with_shifted_labels(ade):
    records = DatasetCatalog.get("ade20k_sem_seg_val")
    assert len(records) == len(ade["records"]) == 2
    for rec, exp in zip(records, ade["records"]):
        assert rec["file_name"] == exp["file_name"]
        np.testing.assert_array_equal(utils.read_image(rec["sem_seg_file_name"]), exp["semantic"])


def test_ade20k_panoptic_records_have_stuff_and_one_segment_per_instance(ade):
    records = DatasetCatalog.get("ade20k_panoptic_val")
    assert len(records) == 2
    for rec, exp in zip(records, ade["records"]):
        assert rec["file_name"] == exp["file_name"] and rec["image_id"] == exp["stem"]
        np.testing.assert_array_equal(utils.read_image(rec["sem_seg_file_name"]), exp["semantic"])
        ids = rgb2id(utils.read_image(rec["pan_seg_file_name"], "RGB"))
        got = sorted(
            (s["category_id"], s["isthing"], (ids == s["id"]).tobytes()) for s in rec["segments_info"]
        )
        want = sorted((s["category_id"], s["isthing"], s["mask"].tobytes()) for s in exp["panoptic"])
        assert got == want
        assert all(s["isthing"] == (s["category_id"] in ADE20K_THING_IDS) for s in rec["segments_info"])


def test_ade20k_instance_records_have_contiguous_thing_ids_and_rle_masks(ade):
    records = DatasetCatalog.get("ade20k_instance_val")
    assert len(records) == 2
    for rec, exp in zip(records, ade["records"]):
        assert rec["file_name"] == exp["file_name"]
        assert [a["category_id"] for a in rec["annotations"]] == [
            ADE20K_THING_IDS.index(i["category_id"]) for i in exp["instances"]
        ]
        for anno, inst in zip(rec["annotations"], exp["instances"]):
            np.testing.assert_array_equal(mask_util.decode(anno["segmentation"]).astype(bool), inst["mask"])
