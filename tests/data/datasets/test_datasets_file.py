"""The datasets file: each format registered with metadata read from the data and loaded into
dataset dicts that match what was written; relative paths; class names from a text file; the
panoptic dataset's derived semantic PNGs cached; and errors that name the file, dataset and key."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from helpers.dataset_writers import CUSTOM_CATEGORIES, CUSTOM_CLASSES, write_custom_datasets
from PIL import Image

from mask2former_dinat.data.datasets import DatasetsFileError, register_datasets_file
from mask2former_dinat.data.datasets.custom_formats import default_colors


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("M2F_DINAT_CACHE", str(root / "cache"))
        written = write_custom_datasets(root, splits=("val",))
        names = register_datasets_file(written["yaml"])
        assert names == ["coco_instances_val", "coco_panoptic_val", "sem_seg_val"]
        yield written


def test_coco_instances_metadata_and_records_come_from_the_json(written):
    meta = MetadataCatalog.get("coco_instances_val")
    assert meta.thing_classes == ["brick", "wheel"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    assert meta.thing_colors == default_colors(2)  # COCO instance JSONs carry no colours
    assert meta.evaluator_type == "coco" and meta.dataset_format == "coco_instances"
    expected = written["coco_instances", "val"]["records"]
    records = DatasetCatalog.get("coco_instances_val")
    assert [r["file_name"] for r in records] == [r["file_name"] for r in expected]
    for record, want in zip(records, expected):
        assert [a["category_id"] for a in record["annotations"]] == [i["category_id"] for i in want["instances"]]


def test_coco_panoptic_metadata_lists_things_and_all_classes_and_its_semantic_pngs_are_derived(written):
    meta = MetadataCatalog.get("coco_panoptic_val")
    assert meta.stuff_classes == CUSTOM_CLASSES and meta.thing_classes == ["brick", "wheel"]
    assert meta.stuff_colors == [c["color"] for c in CUSTOM_CATEGORIES]
    assert meta.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
    expected = written["coco_panoptic", "val"]["records"]
    records = DatasetCatalog.get("coco_panoptic_val")
    assert [r["file_name"] for r in records] == [r["file_name"] for r in expected]
    for record, want in zip(records, expected):
        assert (record["height"], record["width"]) == want["semantic"].shape
        assert [s["category_id"] for s in record["segments_info"]] == [s["category_id"] for s in want["segments"]]
        assert np.array_equal(np.asarray(Image.open(record["sem_seg_file_name"])), want["semantic"])
    instances = json.loads(open(meta.json_file).read())  # derived beside them, for instance AP
    assert len(instances["annotations"]) == sum(s["isthing"] for r in expected for s in r["segments"])
    assert [c["name"] for c in instances["categories"]] == ["brick", "wheel"]


def test_derived_files_are_cached_and_redone_when_the_json_changes(written):
    meta = MetadataCatalog.get("coco_panoptic_val")
    png = DatasetCatalog.get("coco_panoptic_val")[0]["sem_seg_file_name"]
    stamp = os.stat(png).st_mtime_ns
    DatasetCatalog.get("coco_panoptic_val")
    assert os.stat(png).st_mtime_ns == stamp
    panoptic_json = meta.panoptic_json
    data = json.loads(open(panoptic_json).read())
    with open(panoptic_json, "w") as f:
        json.dump(data, f, indent=1)  # same content, another size: a new cache folder
    register_datasets_file(written["yaml"])
    moved = DatasetCatalog.get("coco_panoptic_val")[0]["sem_seg_file_name"]
    assert moved != png and os.path.isfile(moved)


def test_sem_seg_pairs_images_and_labels_by_file_stem(written, tmp_path):
    meta = MetadataCatalog.get("sem_seg_val")
    assert meta.stuff_classes == CUSTOM_CLASSES and meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    assert meta.stuff_colors == default_colors(4)
    want = written["sem_seg", "val"]["records"]
    assert DatasetCatalog.get("sem_seg_val") == [{"file_name": r["file_name"], "sem_seg_file_name": r["sem_seg_file_name"]} for r in want]
    # as many images as labels, but the names differ: nothing pairs (detectron2's load_sem_seg would pair them by order)
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.jpg")
    Image.new("L", (8, 8)).save(tmp_path / "lbl" / "b.png")
    (tmp_path / "d.yaml").write_text("odd: {format: sem_seg, images: img, labels: lbl, classes: [x]}\n")
    register_datasets_file(str(tmp_path / "d.yaml"))
    with pytest.raises(ValueError, match=f"dataset 'odd': no image under {tmp_path / 'img'} has a label PNG of the same name"):
        DatasetCatalog.get("odd")


def test_paths_are_relative_to_the_file_and_classes_may_be_a_text_file(tmp_path):
    (tmp_path / "sub" / "img").mkdir(parents=True)
    (tmp_path / "sub" / "names.txt").write_text("road\n\ncar\n")
    (tmp_path / "sub" / "d.yaml").write_text(
        "roads: {format: sem_seg, images: img, labels: ../lbl, classes: names.txt, ignore_label: 0, colors: [[1, 2, 3], [4, 5, 6]]}\n"
    )
    register_datasets_file(str(tmp_path / "sub" / "d.yaml"))
    meta = MetadataCatalog.get("roads")
    assert meta.image_root == str(tmp_path / "sub" / "img") and meta.sem_seg_root == str(tmp_path / "lbl")
    assert meta.stuff_classes == ["road", "car"] and meta.ignore_label == 0 and meta.stuff_colors == [[1, 2, 3], [4, 5, 6]]
    assert meta.datasets_file == str(tmp_path / "sub" / "d.yaml")
    with pytest.raises(FileNotFoundError, match=f"dataset 'roads': folder {tmp_path / 'lbl'} \\(key 'labels' in .*d.yaml\\) does not exist"):
        DatasetCatalog.get("roads")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[a, b]", "expected a mapping of dataset names to {format: ..., ...} entries"),
        ("a: {format: coco, json: x.json, images: .}", "dataset 'a': 'format' is 'coco'; one of coco_instances, coco_panoptic, sem_seg"),
        ("a: {format: coco_instances, json: x.json, images: ., labels: y}",
         "dataset 'a' (coco_instances): unknown key(s) 'labels'; the keys of coco_instances are json, images"),
        ("a: {format: coco_panoptic, json: x.json, images: .}",
         "dataset 'a' (coco_panoptic): missing key(s) 'panoptic' (panoptic: the folder of its panoptic PNGs)"),
        ("a: {format: sem_seg, images: ., labels: ., classes: [x, y, x]}", "dataset 'a', key 'classes': names repeat: ['x']"),
        ("a: {format: sem_seg, images: ., labels: ., classes: nofile.txt}", "dataset 'a', key 'classes': cannot read the class names file"),
        ("a: {format: sem_seg, images: ., labels: ., classes: [x], colors: [[1, 2]]}",
         "dataset 'a', key 'colors': expected 1 [R, G, B] lists of 0..255, one per class"),
        ("a: {format: sem_seg, images: ., labels: ., classes: [x], ignore_label: -1}",
         "dataset 'a', key 'ignore_label': expected an integer 0..65535, got -1"),
        ("a: {format: coco_instances, json: missing.json, images: .}", "dataset 'a' (coco_instances): key 'json': "),
        ("coco_2017_val: {format: coco_instances, json: x.json, images: .}",
         "dataset 'coco_2017_val' is already a dataset of detectron2 or this project; give yours another name"),
        ("a: {format: [", " is not valid YAML"),
    ],
)
def test_a_datasets_file_that_cannot_be_used_is_refused_naming_file_dataset_and_key(tmp_path, text, message):
    path = tmp_path / "d.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DatasetsFileError) as info:
        register_datasets_file(str(path))
    assert str(info.value).startswith(f"datasets file {path}") and message in str(info.value)


def test_a_coco_json_without_categories_is_refused_naming_it(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"images": [], "annotations": []}))
    (tmp_path / "d.yaml").write_text("a: {format: coco_instances, json: x.json, images: .}\n")
    with pytest.raises(DatasetsFileError, match=f"{tmp_path / 'x.json'}: no 'categories' list"):
        register_datasets_file(str(tmp_path / "d.yaml"))
