"""The data check on datasets with one problem of each kind, per format: each problem is found and
named with its file and entry; a clean dataset has none; --skip-bad's re-registration loads the
rest, including what detectron2's loader would have raised on."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from helpers.dataset_writers import CUSTOM_CATEGORIES, custom_scenes, write_coco_instances, write_coco_panoptic, write_sem_seg
from PIL import Image

from mask2former_dinat.data.checks import PROBLEM_KINDS, check_dataset, skip_bad
from mask2former_dinat.data.datasets import register_datasets_file


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path / "cache"))


def _register(tmp_path, name, entry):
    yaml = tmp_path / f"{name}.yaml"
    yaml.write_text(f"{name}: {json.dumps(entry)}\n")
    register_datasets_file(str(yaml))
    return name


def _problems(report):
    return [(p.kind, p.file, p.entry, p.detail) for p in report.problems]


def _edit_json(path, edit):
    data = json.loads(open(path).read())
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)


def test_problem_kinds_are_named_and_described():
    assert "class id above NUM_CLASSES" in PROBLEM_KINDS and all(PROBLEM_KINDS.values())


@pytest.fixture
def broken_instances(tmp_path):
    w = write_coco_instances(tmp_path, "train", custom_scenes(3), categories=CUSTOM_CATEGORIES)
    (tmp_path / "coco" / "train" / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg")

    def edit(data):
        images = data["images"]
        images[0]["width"] = 99                                                           # image size
        data["images"] += [
            dict(images[1], id=50, file_name="gone.jpg"),                                 # missing image
            dict(images[1], id=51, file_name="junk.jpg"),                                 # unreadable image
            dict(images[2], file_name="again.jpg"),                                       # duplicate image
        ]
        base = {"iscrowd": 0, "area": 10.0, "image_id": images[1]["id"], "category_id": 1}
        data["annotations"] += [
            dict(base, id=101, category_id=9, segmentation=[[1, 1, 9, 1, 9, 9]], bbox=[1, 1, 8, 8]),   # unknown category
            dict(base, id=102, segmentation=[[1, 1, 5, 5]], bbox=[1, 1, 4, 4]),                         # short polygon
            dict(base, id=103, segmentation=[[50, 10, 80, 10, 80, 20]], bbox=[50, 10, 30, 10]),         # outside image
            dict(base, id=104, image_id=77, segmentation=[[1, 1, 9, 1, 9, 9]], bbox=[1, 1, 8, 8]),      # unknown image
        ]
        data["categories"].append({"id": 5, "name": "door"})                              # empty category

    _edit_json(w["json_file"], edit)
    name = _register(tmp_path, "broken_instances", {"format": "coco_instances", "json": w["json_file"], "images": w["image_dir"]})
    return name, w


def test_coco_instances_check_names_each_problem_with_its_file_and_entry(broken_instances):
    name, w = broken_instances
    report = check_dataset(name)
    image = lambda f: os.path.join(w["image_dir"], f)  # noqa: E731
    json_file, second = w["json_file"], "000000001001.jpg"
    found = _problems(report)
    assert report.counts == {"images": 6, "annotations": 13, "categories": 3}
    assert ("image size", json_file, "image 1000 (000000001000.jpg)", "the JSON says 99x48, the file is 64x48") in found
    assert ("missing image", image("gone.jpg"), "(image 50)", "the file does not exist") in found
    assert any(k == "unreadable image" and f == image("junk.jpg") and e == "(image 51)" for k, f, e, _ in found)
    assert ("duplicate image", json_file, "image 1002", "listed again as again.jpg") in found
    assert ("unknown category", json_file, f"annotation 101 (image {second})",
            "category_id 9 is not among the categories [1, 2, 5]") in found
    assert ("short polygon", json_file, f"annotation 102 (image {second})",
            "polygon 0 has 2 points; a polygon needs at least 3 (6 coordinates)") in found
    assert ("outside image", json_file, f"annotation 103 (image {second})",
            "polygon 0 spans x 50..80, y 10..20, outside the 64x48 image") in found
    assert ("outside image", json_file, f"annotation 103 (image {second})",
            "bbox [50, 10, 30, 10] reaches outside the 64x48 image") in found
    assert ("unknown image", json_file, "annotation 104", "image_id 77 is not in 'images'") in found
    assert ("empty category", json_file, "category 5 'door'", "no annotation uses it") in found
    assert len(found) == 10
    assert report.bad_images == tuple(sorted(image(f) for f in ("000000001000.jpg", second, "gone.jpg", "junk.jpg", "again.jpg")))
    text = report.text()
    assert text.startswith(f"broken_instances (coco_instances, {json_file}): 6 images, 13 annotations, 3 categories: 10 problem(s)")
    assert f"\n  short polygon: {json_file} annotation 102 (image {second}): polygon 0 has 2 points" in text


def test_skip_bad_loads_the_instances_without_the_images_with_problems(broken_instances):
    name, w = broken_instances
    with pytest.raises(KeyError):  # what detectron2's loader does with the unknown category
        DatasetCatalog.get(name)
    report = check_dataset(name)
    line = skip_bad(name, report.bad_images, report.counts["images"])
    assert line.startswith(f"--skip-bad: leaving out 5 of the 6 images of dataset '{name}'")
    records = DatasetCatalog.get(name)
    assert [os.path.basename(r["file_name"]) for r in records] == ["000000001002.jpg"]
    assert len(records[0]["annotations"]) == 3


@pytest.fixture
def broken_panoptic(tmp_path):
    scenes = custom_scenes(5)  # the fifth image stays clean
    w = write_coco_panoptic(tmp_path, "train", scenes, semseg=True, categories=CUSTOM_CATEGORIES)
    pngs = [r["pan_seg_file_name"] for r in w["records"]]
    os.remove(pngs[0])                                                                    # missing label
    bigger = Image.new("RGB", (70, 50))
    bigger.paste(Image.open(pngs[1]))
    bigger.save(pngs[1])                                                                  # label size
    semantic = os.path.join(w["semseg_root"], os.path.basename(pngs[3]))
    labels = np.asarray(Image.open(semantic)).copy()
    labels[0, 0] = 7
    Image.fromarray(labels).save(semantic)                                                # class id above NUM_CLASSES

    def edit(data):
        segments = data["annotations"][2]["segments_info"]
        segments[0]["category_id"] = 9                                                    # unknown category
        segments.append(dict(segments[1], id=12345))                                      # segment without pixels
        data["annotations"][3]["segments_info"].pop()                                     # unlisted segment
        data["categories"].append({"id": 5, "name": "door", "isthing": 1})                # empty category

    _edit_json(w["panoptic_json"], edit)
    name = _register(tmp_path, "broken_panoptic", {
        "format": "coco_panoptic", "json": w["panoptic_json"], "panoptic": w["panoptic_root"],
        "images": w["image_dir"], "sem_seg": w["semseg_root"],
    })
    return name, w, pngs, semantic


def test_coco_panoptic_check_names_each_problem_with_its_file_and_entry(broken_panoptic):
    name, w, pngs, semantic = broken_panoptic
    report = check_dataset(name)
    found = _problems(report)
    json_file = w["panoptic_json"]
    entry = lambda i: f"(image 00000000100{i}.jpg)"  # noqa: E731
    ids = [s["id"] for s in json.loads(open(json_file).read())["annotations"][2]["segments_info"]]
    assert ("missing label", pngs[0], entry(0), "the file does not exist") in found
    assert ("label size", pngs[1], entry(1), "the PNG is 70x50, its image 64x48") in found
    assert ("unknown category", json_file, f"segment {ids[0]} {entry(2)}",
            "category_id 9 is not among the categories [1, 2, 3, 4, 5]") in found
    assert ("segment without pixels", pngs[2], f"segment 12345 {entry(2)}", "no pixel of the PNG has this segment id") in found
    assert any(k == "unlisted segment" and f == pngs[3] and d.endswith("are in the PNG but not in the annotation's segments_info")
               for k, f, _, d in found)
    assert ("class id above NUM_CLASSES", semantic, entry(3),
            "values [7] are neither class ids 0..4 nor the ignore label 255") in found
    assert ("empty category", json_file, "category 5 'door'", "no segment uses it") in found
    assert len(found) == 7
    assert len(report.bad_images) == 4 and report.droppable
    with pytest.raises(ValueError, match="has unknown category 9"):
        DatasetCatalog.get(name)
    skip_bad(name, report.bad_images, report.counts["images"])
    (record,) = DatasetCatalog.get(name)
    assert record["file_name"] == os.path.join(w["image_dir"], "000000001004.jpg") and len(record["segments_info"]) == 5


@pytest.fixture
def broken_sem_seg(tmp_path):
    w = write_sem_seg(tmp_path, "train", custom_scenes(7))  # train_0006 stays clean
    images, labels = w["image_dir"], w["label_dir"]
    os.remove(os.path.join(labels, "train_0000.png"))                                     # missing label
    os.remove(os.path.join(images, "train_0001.jpg"))                                     # missing image
    with open(os.path.join(images, "train_0002.jpg"), "wb") as f:                         # unreadable image
        f.write(b"garbage")
    Image.new("RGB", (64, 48)).save(os.path.join(labels, "train_0003.png"))               # unreadable label
    Image.new("L", (60, 48)).save(os.path.join(labels, "train_0004.png"))                 # label size
    label = np.asarray(Image.open(os.path.join(labels, "train_0005.png"))).copy()
    label[:2, :3] = 9
    Image.fromarray(label).save(os.path.join(labels, "train_0005.png"))                   # class id above NUM_CLASSES
    classes = tmp_path / "classes.txt"
    classes.write_text("brick\nwheel\nfloor\nwall\n\ndoor\n")                             # empty category
    name = _register(tmp_path, "broken_sem_seg", {"format": "sem_seg", "images": images, "labels": labels, "classes": str(classes)})
    return name, w


def test_sem_seg_check_names_each_problem_with_its_file(broken_sem_seg):
    name, w = broken_sem_seg
    report = check_dataset(name)
    found = {(k, os.path.basename(f)): d for k, f, _, d in _problems(report)}
    assert report.counts == {"images": 6, "label PNGs": 6, "categories": 5}
    assert found[("missing label", "train_0000.jpg")] == f"no label train_0000.png in {w['label_dir']}"
    assert found[("missing image", "train_0001.png")] == f"no image of the same name in {w['image_dir']}"
    assert ("unreadable image", "train_0002.jpg") in found
    assert found[("unreadable label", "train_0003.png")].startswith("mode RGB (3 channels): a label PNG holds one class id per pixel")
    assert found[("label size", "train_0004.png")] == "the label is 60x48, its image train_0004.jpg 64x48"
    assert found[("class id above NUM_CLASSES", "train_0005.png")] == (
        "values [9] (6 pixels) are neither class ids 0..4 of the 5 classes nor the ignore label 255"
    )
    assert found[("empty category", "labels")] == "no label pixel has this class"
    assert len(found) == 7
    skip_bad(name, report.bad_images, report.counts["images"])
    assert [os.path.basename(r["file_name"]) for r in DatasetCatalog.get(name)] == ["train_0006.jpg"]


def test_a_clean_dataset_of_each_format_has_no_problems(tmp_path):
    scenes = custom_scenes(2)
    inst = write_coco_instances(tmp_path, "val", scenes, categories=CUSTOM_CATEGORIES)
    pan = write_coco_panoptic(tmp_path, "val", scenes, semseg=False, write_images=False, categories=CUSTOM_CATEGORIES)
    sem = write_sem_seg(tmp_path, "val", scenes)
    names = [
        _register(tmp_path, "ok_instances", {"format": "coco_instances", "json": inst["json_file"], "images": inst["image_dir"]}),
        _register(tmp_path, "ok_panoptic", {"format": "coco_panoptic", "json": pan["panoptic_json"],
                                            "panoptic": pan["panoptic_root"], "images": pan["image_dir"]}),
        _register(tmp_path, "ok_sem_seg", {"format": "sem_seg", "images": sem["image_dir"], "labels": sem["label_dir"],
                                           "classes": [c["name"] for c in CUSTOM_CATEGORIES]}),
    ]
    for name in names:
        report = check_dataset(name)
        assert report.ok, report.text()
        assert report.text().endswith("no problems")


def test_an_annotation_file_that_is_not_json_is_a_bad_file(tmp_path):
    w = write_coco_instances(tmp_path, "val", custom_scenes(1), categories=CUSTOM_CATEGORIES)
    name = _register(tmp_path, "soon_bad", {"format": "coco_instances", "json": w["json_file"], "images": w["image_dir"]})
    with open(w["json_file"], "w") as f:
        f.write("{ truncated")
    report = check_dataset(name)
    ((kind, file, _, detail),) = _problems(report)
    assert (kind, file) == ("bad file", w["json_file"]) and detail.startswith(f"dataset 'soon_bad': cannot read {w['json_file']} as JSON")
    assert not report.droppable
