"""COCO registrations read the real on-disk formats: instances JSON (polygons, RLE), panoptic
PNG + JSON, and the semantic PNGs of the ``_with_sem_seg`` variant."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from helpers.dataset_writers import registered_datasets, use_datasets_root, write_coco
from panopticapi.utils import rgb2id

import mask2former_dinat  # noqa: F401


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: write_coco(root, "val2017"))


def _decode(segm, h, w):
    if isinstance(segm, list):
        return mask_util.decode(mask_util.merge(mask_util.frPyObjects(segm, h, w))).astype(bool)
    if isinstance(segm["counts"], list):
        segm = mask_util.frPyObjects(segm, h, w)
    return mask_util.decode(segm).astype(bool)


def test_coco_instances_records_have_contiguous_classes_and_exact_masks(coco):
    records = DatasetCatalog.get("coco_2017_val")
    expected = coco["instances"]["records"]
    assert len(records) == len(expected) == 2
    for rec, exp in zip(records, expected):
        assert rec["file_name"] == exp["file_name"] and rec["image_id"] == exp["image_id"]
        assert [a["category_id"] for a in rec["annotations"]] == [i["category_id"] for i in exp["instances"]]
        assert [bool(a["iscrowd"]) for a in rec["annotations"]] == [bool(i["iscrowd"]) for i in exp["instances"]]
        kinds = {type(a["segmentation"]).__name__ for a in rec["annotations"]}
        assert kinds == {"list", "dict"}  # polygons for objects, RLE for the crowd
        for anno, inst in zip(rec["annotations"], exp["instances"]):
            np.testing.assert_array_equal(_decode(anno["segmentation"], rec["height"], rec["width"]), inst["mask"])


@pytest.mark.parametrize("name", ["coco_2017_val_panoptic", "coco_2017_val_panoptic_with_sem_seg"])
def test_coco_panoptic_records_map_segments_to_contiguous_ids(coco, name):
    records = DatasetCatalog.get(name)
    expected = coco["panoptic"]["records"]
    assert len(records) == len(expected)
    for rec, exp in zip(records, expected):
        assert rec["file_name"] == exp["file_name"] and rec["pan_seg_file_name"] == exp["pan_seg_file_name"]
        got = [(s["id"], s["category_id"], s["isthing"], s["iscrowd"]) for s in rec["segments_info"]]
        want = [(s["id"], s["category_id"], s["isthing"], s["iscrowd"]) for s in exp["segments"]]
        assert got == want
        ids = rgb2id(utils.read_image(rec["pan_seg_file_name"], "RGB"))
        for seg in exp["segments"]:
            np.testing.assert_array_equal(ids == seg["id"], seg["mask"])


def test_coco_panoptic_with_sem_seg_points_at_semantic_pngs_with_contiguous_ids(coco):
    records = DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    for rec, exp in zip(records, coco["panoptic"]["records"]):
        sem = utils.read_image(rec["sem_seg_file_name"])
        np.testing.assert_array_equal(sem, exp["semantic"])
        assert set(np.unique(sem)) <= set(range(133)) | {255}
    assert all("sem_seg_file_name" not in r for r in DatasetCatalog.get("coco_2017_val_panoptic"))


def test_coco_panoptic_with_sem_seg_without_semantic_pngs_names_the_prepare_script(tmp_path):
    write_coco(tmp_path, "val2017", semseg=False)
    with use_datasets_root(tmp_path):
        assert len(DatasetCatalog.get("coco_2017_val_panoptic")) == 2
        with pytest.raises(FileNotFoundError, match="prepare_coco_semantic_annos_from_panoptic.py"):
            DatasetCatalog.get("coco_2017_val_panoptic_with_sem_seg")
