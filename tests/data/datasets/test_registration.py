"""Every dataset the published configs name is registered at import, with complete and
consistent metadata, and fails with one clear error when its folder is missing."""
import os
import subprocess
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from helpers.configs import published_values
from helpers.dataset_writers import datasets_env, use_datasets_root, write_ade20k, write_cityscapes

import mask2former_dinat  # noqa: F401  (registers the datasets)
from mask2former_dinat.data.datasets import register_all_datasets
from mask2former_dinat.data.datasets.register_coco_instance import coco_instance_metadata
from mask2former_dinat.data.datasets.register_coco_panoptic_annos_semseg import coco_panoptic_standard_metadata


def _config_datasets(reference_dir):
    """(dataset name, mapper name, NUM_CLASSES) for every train/test dataset of the published configs."""
    out = []
    for cfg in published_values().values():
        for name in cfg["DATASETS.TRAIN"] + cfg["DATASETS.TEST"]:
            out.append((name, cfg["INPUT.DATASET_MAPPER_NAME"], cfg["MODEL.SEM_SEG_HEAD.NUM_CLASSES"]))
    return out


ALL_NAMES = [
    "coco_2017_train", "coco_2017_val",
    "coco_2017_train_panoptic", "coco_2017_val_panoptic",
    "coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg",
    "ade20k_sem_seg_train", "ade20k_sem_seg_val",
    "ade20k_panoptic_train", "ade20k_panoptic_val",
    "ade20k_instance_train", "ade20k_instance_val",
    "cityscapes_fine_sem_seg_train", "cityscapes_fine_sem_seg_val",
    "cityscapes_fine_instance_seg_train", "cityscapes_fine_instance_seg_val",
    "cityscapes_fine_panoptic_train", "cityscapes_fine_panoptic_val",
]  # fmt: skip

# evaluator_type -> metadata keys holding file locations
LOCATION_KEYS = {
    "coco": ["json_file", "image_root"],
    "sem_seg": ["sem_seg_root", "image_root"],
    "coco_panoptic_seg": ["panoptic_root", "panoptic_json", "image_root", "json_file"],
    "ade20k_panoptic_seg": ["panoptic_root", "panoptic_json", "image_root", "json_file", "sem_seg_root"],
    "cityscapes_sem_seg": ["image_dir", "gt_dir"],
    "cityscapes_instance": ["image_dir", "gt_dir"],
    "cityscapes_panoptic_seg": ["panoptic_root", "panoptic_json", "image_root", "gt_dir"],
}


def test_published_configs_name_only_registered_datasets(reference_dir):
    names = {n for n, _, _ in _config_datasets(reference_dir)}
    assert names <= set(ALL_NAMES)
    assert "coco_2017_val_panoptic_with_sem_seg" in names and "ade20k_sem_seg_train" in names


def test_class_count_of_each_dataset_matches_the_config_num_classes(reference_dir):
    for name, mapper, num_classes in _config_datasets(reference_dir):
        meta = MetadataCatalog.get(name)
        classes = meta.thing_classes if mapper in ("mask_former_instance", "coco_instance_lsj") else meta.stuff_classes
        assert len(classes) == num_classes, name


@pytest.mark.parametrize("name", ALL_NAMES)
def test_metadata_is_complete_and_consistent(name):
    meta = MetadataCatalog.get(name)
    assert meta.ignore_label == 255
    for key in LOCATION_KEYS[meta.evaluator_type]:
        assert isinstance(meta.get(key), str) and meta.get(key), (name, key)
    assert meta.get("thing_classes") is not None or meta.evaluator_type == "sem_seg", name
    if meta.get("thing_classes") is not None:
        thing_map = meta.thing_dataset_id_to_contiguous_id
        assert len(meta.thing_colors) == len(meta.thing_classes)
        assert len(set(thing_map.values())) == len(thing_map)
        # panoptic datasets number things among all classes, instance datasets among the things
        classes = meta.stuff_classes if meta.evaluator_type.endswith("panoptic_seg") else meta.thing_classes
        assert all(0 <= v < len(classes) for v in thing_map.values())
        assert all(len(c) == 3 for c in meta.thing_colors)
    if meta.get("stuff_classes") is not None:
        assert len(meta.stuff_colors) == len(meta.stuff_classes)
        stuff_map = meta.stuff_dataset_id_to_contiguous_id
        assert len(set(stuff_map.values())) == len(stuff_map)
        assert all(0 <= v < len(meta.stuff_classes) for v in stuff_map.values())
    if meta.evaluator_type in ("coco", "cityscapes_instance", "cityscapes_sem_seg"):
        # instance tasks: things are numbered 0..#things-1
        assert sorted(thing_map.values()) == list(range(len(meta.thing_classes)))


@pytest.mark.parametrize(
    "name, n_things, n_classes",
    [("coco_2017_val_panoptic_with_sem_seg", 80, 133), ("ade20k_panoptic_val", 100, 150)],
)
def test_panoptic_stuff_map_covers_every_category_and_thing_names_agree(name, n_things, n_classes):
    meta = MetadataCatalog.get(name)
    stuff_map, thing_map = meta.stuff_dataset_id_to_contiguous_id, meta.thing_dataset_id_to_contiguous_id
    assert sorted(stuff_map.values()) == list(range(n_classes))
    assert len(thing_map) == n_things == len(meta.thing_classes)
    assert all(stuff_map[k] == v for k, v in thing_map.items())
    assert [meta.stuff_classes[v] for v in thing_map.values()] == meta.thing_classes


def test_coco_standard_panoptic_has_80_thing_classes_and_same_contiguous_ids_as_with_sem_seg():
    std = MetadataCatalog.get("coco_2017_val_panoptic")
    sem = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(std.thing_classes) == 80 and len(std.stuff_classes) == 133
    assert std.thing_dataset_id_to_contiguous_id == sem.thing_dataset_id_to_contiguous_id
    merged = {**std.thing_dataset_id_to_contiguous_id, **std.stuff_dataset_id_to_contiguous_id}
    assert merged == sem.stuff_dataset_id_to_contiguous_id


def test_coco_metadata_equals_what_detectron2_gives_its_own_coco_datasets():
    # Built from the public COCO_CATEGORIES; pinned against detectron2's builtin (private) metadata
    # on whichever detectron2 runs the suite.
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

    assert coco_instance_metadata() == _get_builtin_metadata("coco")
    standard = _get_builtin_metadata("coco_panoptic_standard")
    ours = coco_panoptic_standard_metadata()
    assert {k: ours[k] for k in standard if k not in ("thing_classes", "thing_colors")} == {
        k: v for k, v in standard.items() if k not in ("thing_classes", "thing_colors")}
    things = [c for c in standard["thing_dataset_id_to_contiguous_id"].values()]
    assert ours["thing_classes"] == [standard["thing_classes"][i] for i in things]


def test_ade20k_instance_and_panoptic_agree_on_the_100_things():
    ins = MetadataCatalog.get("ade20k_instance_val")
    pan = MetadataCatalog.get("ade20k_panoptic_val")
    assert sorted(ins.thing_dataset_id_to_contiguous_id) == sorted(pan.thing_dataset_id_to_contiguous_id)
    assert sorted(ins.thing_dataset_id_to_contiguous_id.values()) == list(range(100))
    assert pan.stuff_classes[12] == "person" and 12 in ins.thing_dataset_id_to_contiguous_id
    assert 0 not in ins.thing_dataset_id_to_contiguous_id  # wall is stuff


def test_import_registers_metadata_under_detectron2_datasets_without_files(tmp_path):
    root = tmp_path / "not-there"
    code = (
        "import mask2former_dinat\n"
        "from detectron2.data import MetadataCatalog\n"
        "print(MetadataCatalog.get('ade20k_sem_seg_val').sem_seg_root)\n"
        "print(MetadataCatalog.get('coco_2017_val_panoptic_with_sem_seg').sem_seg_root)\n"
    )
    env = datasets_env(root)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [
        os.path.join(str(root), "ADEChallengeData2016", "annotations_detectron2", "validation"),
        os.path.join(str(root), "coco", "panoptic_semseg_val2017"),
    ]
    assert not root.exists()


def test_register_all_datasets_reads_the_env_var_when_called(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    try:
        register_all_datasets()
        assert MetadataCatalog.get("coco_2017_val").json_file == os.path.join(
            str(tmp_path), "coco", "annotations", "instances_val2017.json"
        )
    finally:
        monkeypatch.undo()
        register_all_datasets()
    assert not MetadataCatalog.get("coco_2017_val").json_file.startswith(str(tmp_path))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_missing_dataset_folder_names_the_path_and_the_env_var(tmp_path, name):
    with use_datasets_root(tmp_path):
        with pytest.raises(FileNotFoundError) as e:
            DatasetCatalog.get(name)
    message = str(e.value)
    assert str(tmp_path) in message
    assert "DETECTRON2_DATASETS" in message and "datasets/README.md" in message


def test_unprepared_ade20k_names_the_prepare_scripts(tmp_path):
    write_ade20k(tmp_path, "val", prepare=False)
    with use_datasets_root(tmp_path):
        for name, script in [
            ("ade20k_sem_seg_val", "prepare_ade20k_sem_seg.py"),
            ("ade20k_panoptic_val", "prepare_ade20k_pan_seg.py"),
            ("ade20k_instance_val", "prepare_ade20k_ins_seg.py"),
        ]:
            with pytest.raises(FileNotFoundError, match=script):
                DatasetCatalog.get(name)


def test_cityscapes_without_panoptic_annotations_names_cityscapesscripts(tmp_path):
    write_cityscapes(tmp_path, "val", panoptic=False)
    with use_datasets_root(tmp_path):
        with pytest.raises(FileNotFoundError, match="csCreatePanopticImgs"):
            DatasetCatalog.get("cityscapes_fine_panoptic_val")
