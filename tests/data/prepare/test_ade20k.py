"""datasets/prepare_ade20k_{sem,pan,ins}_seg.py: ADE20K scene-parsing annotations (semantic
0..150; instance PNG R = instance class 1..100, G = instance index) -> detectron2 semantic
labels, COCO panoptic PNG + JSON, COCO instance JSON."""
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from helpers.dataset_writers import run_prepare_scripts, write_ade20k
from panopticapi.utils import rgb2id
from PIL import Image

from mask2former_dinat.data.prepare.ade20k_annotations import semantic_to_contiguous
from mask2former_dinat.data.prepare.ade20k_instance import ade20k_instance_annotations
from mask2former_dinat.data.prepare.ade20k_panoptic import ade20k_panoptic_from_annotations

# 3x4 scene: wall (1) on top, floor (4) below, two persons (13; instance class 4) and a chair
# (20) that has no instance annotation; person 2's instance mask also covers a floor pixel.
SEMANTIC = np.array([[1, 1, 13, 0], [4, 13, 13, 20], [4, 4, 13, 20]], dtype=np.uint8)
INSTANCE_CLASS = np.array([[0, 0, 4, 0], [0, 4, 4, 0], [4, 0, 4, 0]])
INSTANCE_INDEX = np.array([[0, 0, 1, 0], [0, 2, 1, 0], [2, 0, 1, 0]])


def test_semantic_labels_shift_by_one_with_other_as_ignore():
    out = semantic_to_contiguous(np.array([[0, 1, 150], [2, 0, 149]], dtype=np.uint8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0, 149], [1, 255, 148]])
    with pytest.raises(ValueError, match="151"):
        semantic_to_contiguous(np.array([[151]], dtype=np.uint8))


def test_panoptic_has_stuff_segments_one_segment_per_instance_and_void_elsewhere():
    pan, segments = ade20k_panoptic_from_annotations(SEMANTIC, INSTANCE_CLASS, INSTANCE_INDEX)
    by_id = {s["id"]: s for s in segments}
    cats = np.vectorize(lambda i: by_id[i]["category_id"] if i else -1)(pan)
    # person = category 12 (instance class 4), wall 0, floor 3; chair without instance and "other" are void
    np.testing.assert_array_equal(cats, [[0, 0, 12, -1], [3, 12, 12, -1], [12, 3, 12, -1]])
    persons = sorted(s["id"] for s in segments if s["category_id"] == 12)
    assert len(persons) == 2
    np.testing.assert_array_equal(pan == persons[0], INSTANCE_INDEX == 1)
    np.testing.assert_array_equal(pan == persons[1], INSTANCE_INDEX == 2)
    floor = next(s for s in segments if s["category_id"] == 3)
    assert floor["area"] == 2 and floor["bbox"] == [0, 1, 2, 2] and floor["iscrowd"] == 0


def test_instance_annotations_are_rle_masks_of_the_things():
    annos = ade20k_instance_annotations(INSTANCE_CLASS, INSTANCE_INDEX, "img")
    assert [a["category_id"] for a in annos] == [12, 12]
    for a, index in zip(annos, (1, 2)):
        np.testing.assert_array_equal(mask_util.decode(a["segmentation"]).astype(bool), INSTANCE_INDEX == index)
        assert a["area"] == int((INSTANCE_INDEX == index).sum()) and a["iscrowd"] == 0
    assert annos[0]["bbox"] == [2, 0, 1, 3] and annos[1]["bbox"] == [0, 1, 2, 2]
    assert isinstance(annos[0]["segmentation"]["counts"], str)


def test_instance_with_two_classes_or_class_zero_is_an_error():
    bad = INSTANCE_CLASS.copy()
    bad[0, 2] = 1
    with pytest.raises(ValueError, match="instance 1 has instance classes"):
        ade20k_instance_annotations(bad, INSTANCE_INDEX, "img")
    bad = np.where(INSTANCE_INDEX == 2, 0, INSTANCE_CLASS)
    with pytest.raises(ValueError, match="instance 2"):
        ade20k_panoptic_from_annotations(SEMANTIC, bad, INSTANCE_INDEX)


SCRIPTS = ("prepare_ade20k_sem_seg.py", "prepare_ade20k_pan_seg.py", "prepare_ade20k_ins_seg.py")


def test_scripts_convert_a_written_dataset_and_explain_a_missing_folder(tmp_path):
    written = write_ade20k(tmp_path, "val", prepare=False)
    base = Path(written["dataset_dir"])
    results = run_prepare_scripts(
        *[(script, "--root", tmp_path, "--splits", "val", "--workers", 2) for script in SCRIPTS],
        ("prepare_ade20k_pan_seg.py", "--root", tmp_path / "nowhere", "--splits", "val"),
    )
    for code, _, err in results[:3]:
        assert code == 0, err
    assert [out.strip() for _, out, _ in results[:3]] == ["val: 2", "val: 2", f"val: {sum(len(r['instances']) for r in written['records'])}"]
    code, _, err = results[3]
    assert code == 2 and "ADEChallengeData2016/images/validation does not exist" in err and "DETECTRON2_DATASETS" in err

    with open(base / "ade20k_panoptic_val.json") as f:
        panoptic = json.load(f)
    with open(base / "ade20k_instance_val.json") as f:
        instances = json.load(f)
    assert len(panoptic["categories"]) == 150 and sum(c["isthing"] for c in panoptic["categories"]) == 100
    assert len(instances["categories"]) == 100
    assert [a["id"] for a in instances["annotations"]] == list(range(1, len(instances["annotations"]) + 1))
    for rec, ann in zip(written["records"], panoptic["annotations"]):
        semantic = np.asarray(Image.open(base / "annotations_detectron2" / "validation" / f"{rec['stem']}.png"))
        np.testing.assert_array_equal(semantic, rec["semantic"])
        ids = rgb2id(np.asarray(Image.open(base / "ade20k_panoptic_val" / ann["file_name"])))
        got = sorted((s["category_id"], (ids == s["id"]).tobytes()) for s in ann["segments_info"])
        assert got == sorted((s["category_id"], s["mask"].tobytes()) for s in rec["panoptic"])
        mine = [a for a in instances["annotations"] if a["image_id"] == rec["stem"]]
        assert [a["category_id"] for a in mine] == [i["category_id"] for i in rec["instances"]]
