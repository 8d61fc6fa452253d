"""The embedded synthetic panoptic dataset: files in COCO panoptic format, registered like COCO."""
import json

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from pycocotools import mask as mask_util

from mask2former_dinat.data import synthetic
from mask2former_dinat.data.datasets.register_synthetic import register_synthetic


def test_generated_split_is_consistent_across_panoptic_semantic_and_instance_files(tmp_path):
    synthetic.generate(tmp_path, num_train=3, num_val=2, height=64, width=80, seed=3)
    pan = json.loads((tmp_path / "val" / "panoptic.json").read_text())
    inst = json.loads((tmp_path / "val" / "instances.json").read_text())
    assert len(pan["images"]) == 2 and len(pan["annotations"]) == 2
    contiguous = {c["id"]: i for i, c in enumerate(synthetic.CATEGORIES)}
    n_things = 0
    for ann in pan["annotations"]:
        rgb = cv2.imread(str(tmp_path / "val" / "panoptic" / ann["file_name"]))[:, :, ::-1]
        ids = rgb2id(rgb)
        sem = cv2.imread(str(tmp_path / "val" / "sem_seg" / ann["file_name"]), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(tmp_path / "val" / "images" / ann["file_name"].replace(".png", ".jpg")))
        assert ids.shape == sem.shape == image.shape[:2] == (64, 80)
        assert set(np.unique(ids)) == {s["id"] for s in ann["segments_info"]}  # no void, no ghost segments
        for seg in ann["segments_info"]:
            mask = ids == seg["id"]
            assert seg["area"] == mask.sum()
            assert (sem[mask] == contiguous[seg["category_id"]]).all()
            if seg["category_id"] in synthetic.THING_IDS:
                n_things += 1
                match = [a for a in inst["annotations"] if a["image_id"] == ann["image_id"] and a["area"] == seg["area"]]
                assert match and (mask_util.decode(match[0]["segmentation"]).astype(bool) == mask).all()
    assert n_things == len(inst["annotations"]) > 0


def test_generate_is_deterministic_and_skips_identical_existing_data(tmp_path):
    synthetic.generate(tmp_path / "a", num_train=2, num_val=1, height=48, width=48, seed=7)
    synthetic.generate(tmp_path / "b", num_train=2, num_val=1, height=48, width=48, seed=7)
    a = (tmp_path / "a" / "train" / "panoptic" / "000002.png").read_bytes()
    assert a == (tmp_path / "b" / "train" / "panoptic" / "000002.png").read_bytes()
    stamp = tmp_path / "a" / "train" / "panoptic" / "000002.png"
    mtime = stamp.stat().st_mtime_ns
    synthetic.generate(tmp_path / "a", num_train=2, num_val=1, height=48, width=48, seed=7)
    assert stamp.stat().st_mtime_ns == mtime


def test_register_exposes_records_and_coco_panoptic_style_metadata(tmp_path):
    synthetic.generate(tmp_path, num_train=2, num_val=2, height=48, width=64)
    train, val = register_synthetic(tmp_path, prefix="synthetic_test")
    records = DatasetCatalog.get(val)
    assert len(records) == 2 and records[0]["sem_seg_file_name"].endswith(".png")
    meta = MetadataCatalog.get(train)
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert len(meta.stuff_classes) == len(synthetic.CATEGORIES)
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == [0, 1, 2]


def test_synthetic_datasets_are_registered_at_import_under_the_datasets_root():
    meta = MetadataCatalog.get("synthetic_panoptic_val")
    assert meta.stuff_classes == [c["name"] for c in synthetic.CATEGORIES]
    assert meta.panoptic_json.endswith("synthetic/val/panoptic.json")


def test_register_before_generation_fails_with_instructions(tmp_path):
    _, val = register_synthetic(tmp_path / "missing", prefix="synthetic_missing")
    try:
        DatasetCatalog.get(val)
    except FileNotFoundError as e:
        assert "synthetic.generate" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_write_video_has_requested_frames_fps_and_size(tmp_path):
    path = synthetic.write_video(tmp_path / "clip.mp4", num_frames=6, height=48, width=64, fps=5)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == 5
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (48, 64, 3)
        frames += 1
    assert frames == 6


def test_scenes_are_bit_identical_on_every_supported_numpy_and_opencv():
    # Pinned on numpy 1.23 + OpenCV 4.8 (the offline set-up) and numpy 2.3 + OpenCV 4.14 (upstream
    # detectron2's): the main job's numbers depend on the data being the same everywhere.
    import hashlib

    image, ids, segments = synthetic.render_scene(np.random.default_rng(0), 128, 128)
    assert hashlib.sha256(image.tobytes()).hexdigest() == "d15a533f8c3ab4104f0432cd49353fc02658561b2279e360526ef68248bc8999"
    assert hashlib.sha256(ids.tobytes()).hexdigest() == "5f80d170f9c94a384cbb4fa149b91a45e578fa2ee6539b5539ac0631cc7521c7"
    assert [s["category_id"] for s in segments] == [6, 7, 5, 2, 2, 1, 2]


def test_each_shape_is_drawn_at_its_drawn_size():
    rng = np.random.default_rng(3)
    for shape, (low, high) in {"circle": (0.7, 0.8), "square": (0.95, 1.05), "triangle": (0.38, 0.50)}.items():
        for _ in range(5):
            state = rng.bit_generator.state
            size = int(rng.integers(max(8, 128 // 6), max(10, 128 // 3)))
            rng.bit_generator.state = state
            area = synthetic._shape_mask(rng, shape, 128, 128).sum()
            assert low * size * size <= area <= high * size * size, (shape, size, area)
