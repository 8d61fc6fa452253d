"""The training dataset mappers turn the registered datasets (written in their real formats)
into model inputs: image uint8 [3, H, W] within the crop / jitter size, sem_seg padded with the
ignore label, and instances whose classes and masks match what was written and what the image
shows."""
import random

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.projects.point_rend import ColorAugSSDTransform
from helpers.dataset_writers import registered_datasets, write_ade20k, write_cityscapes, write_coco
from torch.nn import functional as F

import mask2former_dinat  # noqa: F401
from mask2former_dinat.config import get_cfg
from mask2former_dinat.data.dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    COCOInstanceNewBaselineDatasetMapper,
    COCOPanopticNewBaselineDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    build_train_loader,
    build_train_mapper,
)
from mask2former_dinat.data.dataset_mappers.augmentations import build_maskformer_augmentation


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    yield from registered_datasets(tmp_path_factory, lambda root: {
        "coco": write_coco(root, "val2017"),
        "ade20k": write_ade20k(root, "val"),
        "cityscapes": write_cityscapes(root, "val"),
    })


def _cfg(mapper, dataset, *opts):
    cfg = get_cfg()
    cfg.merge_from_list(["INPUT.DATASET_MAPPER_NAME", mapper, "DATASETS.TRAIN", (dataset,), "INPUT.FORMAT", "RGB", *opts])
    return cfg


def _record(dataset, index=0):
    return sorted(DatasetCatalog.get(dataset), key=lambda r: r["file_name"])[index]


# Geometry-preserving settings: the written 48x64 (COCO, ADE20K) or 32x64 (Cityscapes) images are
# neither resized nor cropped, so targets must equal the written masks exactly.
NO_FLIP = ["INPUT.RANDOM_FLIP", "none"]
LSJ_IDENTITY = ["INPUT.IMAGE_SIZE", 64, "INPUT.MIN_SCALE", 1.0, "INPUT.MAX_SCALE", 1.0, *NO_FLIP]
MF_IDENTITY = ["INPUT.MIN_SIZE_TRAIN", (48,), "INPUT.MAX_SIZE_TRAIN", 1000, "INPUT.CROP.ENABLED", False, *NO_FLIP]
MF_JITTER = [
    "INPUT.MIN_SIZE_TRAIN", (40, 56, 72), "INPUT.MAX_SIZE_TRAIN", 1000, "INPUT.CROP.ENABLED", True,
    "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", (32, 40), "INPUT.SIZE_DIVISIBILITY", 48,
]  # fmt: skip


def _interior(mask, width=2):
    """Mask eroded by ``width`` pixels: away from borders blended by resizing or JPEG."""
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    return (-F.max_pool2d(-m, 2 * width + 1, 1, width))[0, 0].bool()


def _assert_image_shows(image, mask, colors, tol=40):
    """Most interior pixels of ``mask`` in ``image`` (uint8 [3, H, W]) have one of ``colors``."""
    inner = _interior(mask)
    if not inner.any():
        return
    pixels = image.permute(1, 2, 0)[inner].float()
    dist = torch.stack([(pixels - torch.tensor(c, dtype=torch.float32)).abs().amax(-1) for c in colors]).amin(0)
    assert (dist < tol).float().mean() > 0.95


def _pad(mask, shape):
    out = np.zeros(shape, dtype=bool)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


# ------------------------------------------------------------------------------------- registry


def test_each_config_name_builds_its_mapper(data):
    cases = {
        "coco_panoptic_lsj": ("coco_2017_val_panoptic", COCOPanopticNewBaselineDatasetMapper),
        "coco_instance_lsj": ("coco_2017_val", COCOInstanceNewBaselineDatasetMapper),
        "mask_former_semantic": ("ade20k_sem_seg_val", MaskFormerSemanticDatasetMapper),
        "mask_former_panoptic": ("ade20k_panoptic_val", MaskFormerPanopticDatasetMapper),
        "mask_former_instance": ("ade20k_instance_val", MaskFormerInstanceDatasetMapper),
    }
    assert sorted(name for name, _ in DATASET_MAPPER_REGISTRY) == sorted(cases)
    for name, (dataset, cls) in cases.items():
        mapper = build_train_mapper(_cfg(name, dataset))
        assert type(mapper) is cls and mapper.is_train


def test_unknown_mapper_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="'detr_panoptic'.*valid names: coco_instance_lsj, coco_panoptic_lsj, mask_former"):
        build_train_mapper(_cfg("detr_panoptic", "coco_2017_val"))


def _augs(cfg):
    """The mapper's augmentations, transforms unwrapped from detectron2's adapter."""
    return [getattr(a, "tfm", a) for a in build_train_mapper(cfg).augmentations.augs]


def test_published_augmentations_are_built_from_the_config(data):
    augs = _augs(_cfg("mask_former_semantic", "ade20k_sem_seg_val", "INPUT.COLOR_AUG_SSD", True, "INPUT.CROP.ENABLED", True))
    assert [type(a).__name__ for a in augs] == [
        "ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "ColorAugSSDTransform", "RandomFlip",
    ]  # fmt: skip
    augs = _augs(_cfg("mask_former_instance", "ade20k_instance_val", "INPUT.CROP.ENABLED", True))
    assert [type(a).__name__ for a in augs] == ["ResizeShortestEdge", "RandomCrop", "RandomFlip"]
    augs = _augs(_cfg("coco_panoptic_lsj", "coco_2017_val_panoptic"))
    assert [type(a).__name__ for a in augs] == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]
    assert augs[2].crop_size == (1024, 1024)
    assert augs[1].min_scale == 0.1 and augs[1].max_scale == 2.0


# ------------------------------------------------------------------------------ COCO (LSJ)


def test_coco_panoptic_lsj_without_jitter_gives_the_written_segments_padded_to_the_square(data):
    mapper = build_train_mapper(_cfg("coco_panoptic_lsj", "coco_2017_val_panoptic", *LSJ_IDENTITY))
    written = data["coco"]["panoptic"]["records"][0]
    out = mapper(_record("coco_2017_val_panoptic"))
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert (image[:, 48:] == 128).all()  # padding below the 48-row image
    expected = [s for s in written["segments"] if not s["iscrowd"]]
    assert inst.gt_classes.tolist() == [s["category_id"] for s in expected]
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (len(expected), 64, 64)
    for mask, seg in zip(inst.gt_masks, expected):
        np.testing.assert_array_equal(mask.numpy(), _pad(seg["mask"], (64, 64)))
    boxes = inst.gt_boxes.tensor
    ys, xs = np.nonzero(expected[2]["mask"])
    assert boxes[2].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("seed", range(4))
def test_coco_panoptic_lsj_jitter_keeps_masks_on_their_segments(data, seed):
    np.random.seed(seed)
    mapper = build_train_mapper(
        _cfg("coco_panoptic_lsj", "coco_2017_val_panoptic", "INPUT.IMAGE_SIZE", 40, "INPUT.MIN_SCALE", 0.6, "INPUT.MAX_SCALE", 2.0)
    )
    scene = data["coco"]["panoptic"]["scenes"][0]
    out = mapper(_record("coco_2017_val_panoptic"))
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 40, 40) and image.dtype == torch.uint8
    colors = [s.color for s in scene.segments if not s.iscrowd]
    assert len(inst) == len(colors)  # segments cropped away keep an empty mask
    assert not (inst.gt_masks.sum(0) > 1).any()  # panoptic segments do not overlap
    for mask, color in zip(inst.gt_masks, colors):
        _assert_image_shows(image, mask, [color])


@pytest.mark.parametrize("seed", range(3))
def test_coco_instance_lsj_drops_crowds_and_empty_instances_and_marks_padding(data, seed):
    np.random.seed(seed)
    mapper = build_train_mapper(
        _cfg("coco_instance_lsj", "coco_2017_val", "INPUT.IMAGE_SIZE", 48, "INPUT.MIN_SCALE", 0.5, "INPUT.MAX_SCALE", 2.0)
    )
    scene = data["coco"]["instances"]["scenes"][0]
    out = mapper(_record("coco_2017_val"))
    image, inst, padding = out["image"], out["instances"], out["padding_mask"]
    assert image.shape == (3, 48, 48) and padding.shape == (48, 48) and padding.dtype == torch.bool
    assert (image[:, padding] == 128).all()
    assert not inst.gt_masks[:, padding].any()
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.flatten(1).any(1).all()
    things = [s for s in scene.segments if s.category_id in (1, 3) and not s.iscrowd]
    assert set(inst.gt_classes.tolist()) <= {0, 2} and len(inst) <= len(things)
    for mask, cls, box in zip(inst.gt_masks, inst.gt_classes, inst.gt_boxes.tensor):
        _assert_image_shows(image, mask, [s.color for s in things if (s.category_id == 1) == (cls == 0)])
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_coco_instance_lsj_without_jitter_rasterises_the_written_polygons(data):
    mapper = build_train_mapper(_cfg("coco_instance_lsj", "coco_2017_val", *LSJ_IDENTITY))
    written = data["coco"]["instances"]["records"][0]
    out = mapper(_record("coco_2017_val"))
    expected = [i for i in written["instances"] if not i["iscrowd"]]
    assert out["instances"].gt_classes.tolist() == [i["category_id"] for i in expected]
    for mask, inst in zip(out["instances"].gt_masks, expected):
        np.testing.assert_array_equal(mask.numpy(), _pad(inst["mask"], (64, 64)))
    assert out["padding_mask"][48:].all() and not out["padding_mask"][:48].any()


# ------------------------------------------------------------------------- MaskFormer mappers


def test_semantic_mapper_without_resize_gives_the_written_labels_padded_with_ignore(data):
    mapper = build_train_mapper(_cfg("mask_former_semantic", "ade20k_sem_seg_val", *MF_IDENTITY, "INPUT.SIZE_DIVISIBILITY", 32))
    written = data["ade20k"]["records"][0]
    out = mapper(_record("ade20k_sem_seg_val"))
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.uint8
    assert (out["image"][:, 48:] == 128).all()
    sem = out["sem_seg"]
    assert sem.dtype == torch.long and sem.shape == (64, 64)
    np.testing.assert_array_equal(sem[:48].numpy(), written["semantic"])
    assert (sem[48:] == 255).all()
    classes = sorted(set(np.unique(written["semantic"]).tolist()) - {255})
    assert out["instances"].gt_classes.tolist() == classes
    for mask, cls in zip(out["instances"].gt_masks, classes):
        assert torch.equal(mask, sem == cls)


@pytest.mark.parametrize("seed", range(4))
def test_semantic_mapper_crops_pads_and_keeps_labels_on_their_pixels(data, seed):
    np.random.seed(seed)
    mapper = build_train_mapper(_cfg("mask_former_semantic", "ade20k_sem_seg_val", *MF_JITTER))
    scene = data["ade20k"]["scenes"][1]
    out = mapper(_record("ade20k_sem_seg_val", 1))
    image, sem, inst = out["image"], out["sem_seg"], out["instances"]
    assert image.shape == (3, 48, 48) and sem.shape == (48, 48)
    assert (sem[32:] == 255).all() and (sem[:, 40:] == 255).all() and (image[:, 32:] == 128).all()
    assert inst.gt_masks.shape == (len(inst), 48, 48) and 255 not in inst.gt_classes.tolist()
    for mask, cls in zip(inst.gt_masks, inst.gt_classes.tolist()):
        assert torch.equal(mask, sem == cls)
        _assert_image_shows(image, mask, [s.color for s in scene.segments if s.category_id == cls + 1])


def test_semantic_mapper_with_color_aug_changes_colors_not_labels(data):
    np.random.seed(0)
    plain = build_train_mapper(_cfg("mask_former_semantic", "ade20k_sem_seg_val", *MF_IDENTITY))
    aug = build_train_mapper(_cfg("mask_former_semantic", "ade20k_sem_seg_val", *MF_IDENTITY, "INPUT.COLOR_AUG_SSD", True))
    record = _record("ade20k_sem_seg_val")
    a = plain(record)
    outs = [aug(record) for _ in range(4)]
    assert all(torch.equal(o["sem_seg"], a["sem_seg"]) for o in outs)
    assert any(not torch.equal(o["image"], a["image"]) for o in outs)


def test_panoptic_mapper_without_resize_gives_one_target_per_non_crowd_segment(data):
    mapper = build_train_mapper(_cfg("mask_former_panoptic", "ade20k_panoptic_val", *MF_IDENTITY, "INPUT.SIZE_DIVISIBILITY", 32))
    written = data["ade20k"]["records"][0]
    out = mapper(_record("ade20k_panoptic_val"))
    inst = out["instances"]
    assert out["image"].shape == (3, 64, 64) and inst.gt_masks.shape[1:] == (64, 64)
    np.testing.assert_array_equal(out["sem_seg"][:48].numpy(), written["semantic"])
    got = sorted((c, m[:48].numpy().tobytes()) for c, m in zip(inst.gt_classes.tolist(), inst.gt_masks))
    assert got == sorted((s["category_id"], s["mask"].tobytes()) for s in written["panoptic"])
    assert not inst.gt_masks[:, 48:].any()


@pytest.mark.parametrize("seed", range(3))
def test_panoptic_mapper_crops_pads_and_keeps_masks_on_their_segments(data, seed):
    np.random.seed(seed)
    mapper = build_train_mapper(_cfg("mask_former_panoptic", "cityscapes_fine_panoptic_val", *MF_JITTER))
    record = _record("cityscapes_fine_panoptic_val")
    scene = data["cityscapes"]["scenes"][0]
    out = mapper(record)
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 48, 48) and out["sem_seg"].shape == (48, 48)
    assert (out["sem_seg"][32:] == 255).all() and not inst.gt_masks[:, 32:].any()
    non_crowd = [s for s in record["segments_info"] if not s["iscrowd"]]
    assert inst.gt_classes.tolist() == [s["category_id"] for s in non_crowd]
    from cityscapesscripts.helpers.labels import id2label

    for mask, cls in zip(inst.gt_masks, inst.gt_classes.tolist()):
        colors = [s.color for s in scene.segments if id2label[s.category_id].trainId == cls and not s.iscrowd]
        _assert_image_shows(image, mask, colors)


@pytest.mark.parametrize("dataset", ["ade20k_instance_val", "cityscapes_fine_instance_seg_val"])
def test_instance_mapper_without_resize_gives_the_written_instances(data, dataset):
    size = ["INPUT.MIN_SIZE_TRAIN", (32,)] if dataset.startswith("cityscapes") else []
    mapper = build_train_mapper(_cfg("mask_former_instance", dataset, *MF_IDENTITY, *size, "INPUT.SIZE_DIVISIBILITY", 64))
    written = (data["cityscapes"] if dataset.startswith("cityscapes") else data["ade20k"])["records"][0]
    out = mapper(_record(dataset))
    inst = out["instances"]
    h = 32 if dataset.startswith("cityscapes") else 48
    assert out["image"].shape == (3, 64, 64) and (out["image"][:, h:] == 128).all()
    expected = [i for i in written["instances"] if not i.get("iscrowd")]
    if dataset.startswith("ade20k"):
        from mask2former_dinat.data.datasets.ade20k_categories import ADE20K_THING_IDS

        expected = [dict(i, category_id=ADE20K_THING_IDS.index(i["category_id"])) for i in expected]
    got = sorted((c, m.numpy().tobytes()) for c, m in zip(inst.gt_classes.tolist(), inst.gt_masks))
    assert got == sorted((i["category_id"], _pad(i["mask"], (64, 64)).tobytes()) for i in expected)


@pytest.mark.parametrize("seed", range(3))
def test_instance_mapper_with_jitter_keeps_masks_on_their_objects(data, seed):
    np.random.seed(seed)
    mapper = build_train_mapper(_cfg("mask_former_instance", "ade20k_instance_val", *MF_JITTER))
    scene = data["ade20k"]["scenes"][0]
    out = mapper(_record("ade20k_instance_val"))
    image, inst = out["image"], out["instances"]
    assert image.shape == (3, 48, 48) and inst.gt_masks.shape == (3, 48, 48) and inst.gt_masks.dtype == torch.bool
    assert not inst.gt_masks[:, 32:].any() and not inst.gt_masks[:, :, 40:].any()
    for mask, cls in zip(inst.gt_masks, inst.gt_classes.tolist()):
        raw = {3: 13, 0: 8}[cls]  # person, bed
        _assert_image_shows(image, mask, [s.color for s in scene.segments if s.category_id == raw and not s.iscrowd])


def test_horizontal_flip_mirrors_image_and_targets(data):
    mapper = build_train_mapper(
        _cfg("mask_former_semantic", "ade20k_sem_seg_val", *MF_IDENTITY[:-2], "INPUT.RANDOM_FLIP", "horizontal")
    )
    written = data["ade20k"]["records"][0]["semantic"]
    seen = set()
    for seed in range(8):
        np.random.seed(seed)
        sem = mapper(_record("ade20k_sem_seg_val"))["sem_seg"].numpy()
        flipped = np.array_equal(sem, written[:, ::-1])
        assert flipped or np.array_equal(sem, written)
        seen.add(flipped)
    assert seen == {True, False}


def test_train_loader_batches_mapped_images(data):
    cfg = _cfg(
        "mask_former_semantic", "ade20k_sem_seg_val", *MF_JITTER,
        "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0,
    )  # fmt: skip
    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2 and all(b["image"].shape == (3, 48, 48) for b in batch)


# -------------------------------------------------------------------------------- bad input


def test_mappers_refuse_inference_and_wrong_records(data):
    cfg = _cfg("mask_former_semantic", "ade20k_sem_seg_val", *MF_IDENTITY)
    with pytest.raises(ValueError, match="training only"):
        MaskFormerSemanticDatasetMapper(cfg, False)(_record("ade20k_sem_seg_val"))
    record = dict(_record("ade20k_sem_seg_val"))
    record.pop("sem_seg_file_name")
    with pytest.raises(ValueError, match="no 'sem_seg_file_name'"):
        MaskFormerSemanticDatasetMapper(cfg)(record)
    with pytest.raises(ValueError, match="no 'pan_seg_file_name'"):
        MaskFormerPanopticDatasetMapper(cfg)(_record("ade20k_sem_seg_val"))
    with pytest.raises(ValueError, match="not 'annotations'"):
        MaskFormerSemanticDatasetMapper(cfg)(_record("ade20k_instance_val"))
    with pytest.raises(ValueError, match="only build training"):
        COCOPanopticNewBaselineDatasetMapper(_cfg("coco_panoptic_lsj", "coco_2017_val_panoptic"), False)


# ------------------------------------------------------------------------------ color aug


def test_color_aug_ssd_is_photometric_only_and_channel_order_aware():
    # detectron2's PointRend transform, which draws from Python's `random`
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    outs = []
    for fmt, img in (("RGB", rgb), ("BGR", rgb[:, :, ::-1])):
        random.seed(3)
        t = ColorAugSSDTransform(img_format=fmt)
        outs.append([t.apply_image(img) for _ in range(5)])
    for a, b in zip(*outs):
        assert a.shape == rgb.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b[:, :, ::-1])
    assert any(not np.array_equal(a, rgb) for a in outs[0])
    t = ColorAugSSDTransform(img_format="RGB")
    seg = rng.integers(0, 5, (16, 24)).astype(np.uint8)
    assert t.apply_segmentation(seg) is seg
    coords = np.array([[1.0, 2.0]])
    assert t.apply_coords(coords) is coords
    cfg = get_cfg()
    cfg.INPUT.COLOR_AUG_SSD, cfg.INPUT.FORMAT = True, "L"
    with pytest.raises(ValueError, match="RGB or BGR"):
        build_maskformer_augmentation(cfg, category_area_crop=False)


# -------------------------------------------------------------------------------- targets


def test_annotation_masks_from_polygons_rle_and_arrays_agree():
    from mask2former_dinat.data.dataset_mappers.targets import annotation_mask

    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:7] = True
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    uncompressed = {"counts": [13, 3, 3, 3, 3, 3, 3, 3, 3, 3, 8], "size": [6, 8]}  # column-major runs
    forms = [[[2, 1, 7, 1, 7, 4, 2, 4]], rle, dict(rle, counts=rle["counts"].decode()), uncompressed, mask.astype(np.uint8)]
    for segm in forms:
        np.testing.assert_array_equal(annotation_mask(segm, 6, 8), mask)
    with pytest.raises(ValueError, match="type str"):
        annotation_mask("polygon", 6, 8)
    with pytest.raises(ValueError, match="is 6x8, the image 6x9"):
        annotation_mask(mask, 6, 9)


def test_semantic_targets_skip_the_ignore_label_and_padding_uses_multiples():
    from mask2former_dinat.data.dataset_mappers.targets import instances_from_semantic, pad_to_multiple

    sem = torch.tensor([[255, 3], [0, 3]])
    inst = instances_from_semantic(sem, 255)
    assert inst.gt_classes.tolist() == [0, 3] and inst.gt_masks.tolist() == [[[0, 0], [1, 0]], [[0, 1], [0, 1]]]
    empty = instances_from_semantic(torch.full((2, 3), 255), 255)
    assert empty.gt_masks.shape == (0, 2, 3) and empty.gt_masks.dtype == torch.bool
    padded = pad_to_multiple(torch.ones(2, 5, 7, dtype=torch.uint8), 4, 9)
    assert padded.shape == (2, 8, 8) and (padded[:, 5:] == 9).all() and (padded[:, :, 7:] == 9).all()
    assert pad_to_multiple(sem, -1, 0) is sem
