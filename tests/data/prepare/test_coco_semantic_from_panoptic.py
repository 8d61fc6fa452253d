"""datasets/prepare_coco_semantic_annos_from_panoptic.py: panoptic PNG + segments -> semantic
PNG with contiguous ids (index in COCO_CATEGORIES), 255 for void."""
import json
from pathlib import Path

import numpy as np
import pytest
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from helpers.dataset_writers import run_prepare_scripts, write_coco_panoptic
from PIL import Image

from mask2former_dinat.data.prepare.coco_semantic_from_panoptic import (
    convert_coco_panoptic_to_semantic,
    panoptic_to_semantic,
)

SCRIPT = "prepare_coco_semantic_annos_from_panoptic.py"
ID_MAP = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def _rgb(ids):
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def test_panoptic_to_semantic_maps_each_segment_to_its_contiguous_category():
    ids = [[0, 5, 5, 300], [70000, 70000, 0, 300]]
    segments = [
        {"id": 5, "category_id": 1},  # person -> 0
        {"id": 300, "category_id": 92},  # banner, the first stuff -> 80
        {"id": 70000, "category_id": 200},  # rug-merged, the last -> 132
    ]
    out = panoptic_to_semantic(_rgb(ids), segments, ID_MAP)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0, 0, 80], [132, 132, 255, 80]])


def test_segment_without_json_entry_stays_void_and_unknown_category_is_an_error():
    out = panoptic_to_semantic(_rgb([[7, 8]]), [{"id": 8, "category_id": 3}], ID_MAP)
    np.testing.assert_array_equal(out, [[255, 2]])
    with pytest.raises(ValueError, match="category 999"):
        panoptic_to_semantic(_rgb([[7]]), [{"id": 7, "category_id": 999}], ID_MAP)


def test_conversion_writes_the_expected_pngs_in_worker_processes(tmp_path):
    written = write_coco_panoptic(tmp_path, "val2017", semseg=False)
    out_dir = tmp_path / "semseg"
    n = convert_coco_panoptic_to_semantic(written["panoptic_json"], written["panoptic_root"], out_dir, workers=2)
    assert n == 2
    with open(written["panoptic_json"]) as f:
        files = [a["file_name"] for a in json.load(f)["annotations"]]
    for file_name, rec in zip(files, written["records"]):
        np.testing.assert_array_equal(np.asarray(Image.open(out_dir / file_name)), rec["semantic"])


def test_script_converts_under_root_explains_a_missing_folder_and_has_help(tmp_path):
    written = write_coco_panoptic(tmp_path, "val2017", semseg=False)
    (code, out, err), (bad_code, _, bad_err), (help_code, help_out, _) = run_prepare_scripts(
        (SCRIPT, "--root", tmp_path, "--splits", "val2017", "--workers", 1),
        (SCRIPT, "--root", tmp_path / "nowhere", "--splits", "val2017"),
        (SCRIPT, "--help"),
    )
    assert code == 0, err
    assert "val2017: wrote 2 semantic PNGs" in out
    for rec in written["records"]:
        out_file = tmp_path / "coco" / "panoptic_semseg_val2017" / Path(rec["pan_seg_file_name"]).name
        np.testing.assert_array_equal(np.asarray(Image.open(out_file)), rec["semantic"])
    assert bad_code == 2 and "panoptic_val2017.json does not exist" in bad_err
    assert "DETECTRON2_DATASETS" in bad_err
    assert help_code == 0 and "panoptic_semseg_<split>" in help_out and "--workers" in help_out
