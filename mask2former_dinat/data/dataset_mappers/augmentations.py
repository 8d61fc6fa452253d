"""The training augmentations of the published configs, built from cfg.INPUT."""
import inspect

from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform

__all__ = ["build_flip", "build_lsj_augmentation", "build_maskformer_augmentation"]


def build_flip(cfg):
    """[RandomFlip] per INPUT.RANDOM_FLIP ("horizontal", "vertical" or "none": [])."""
    flip = cfg.INPUT.RANDOM_FLIP
    if flip == "none":
        return []
    if flip not in ("horizontal", "vertical"):
        raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', not {flip!r}")
    return [T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical")]


def build_lsj_augmentation(cfg):
    """Large-scale jitter: flip, resize so the image fits an IMAGE_SIZE square scaled by
    U(MIN_SCALE, MAX_SCALE), then a random IMAGE_SIZE x IMAGE_SIZE crop padded (with 128 in the
    image, 0 in segmentations) to exactly that size."""
    size = cfg.INPUT.IMAGE_SIZE
    return build_flip(cfg) + [
        T.ResizeScale(min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE, target_height=size, target_width=size),
        fixed_size_crop(size),
    ]


def fixed_size_crop(size):
    """T.FixedSizeCrop to size x size, padding segmentations with 0 on every detectron2: 0.6 has
    no seg_pad_value and pads with 0 (what the published models trained with); upstream main
    takes seg_pad_value and defaults it to 255, which would mark padding as a mask."""
    if "seg_pad_value" in inspect.signature(T.FixedSizeCrop.__init__).parameters:
        return T.FixedSizeCrop(crop_size=(size, size), seg_pad_value=0)
    return T.FixedSizeCrop(crop_size=(size, size))


def build_maskformer_augmentation(cfg, category_area_crop):
    """ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING); if CROP.ENABLED
    a crop of CROP.TYPE/CROP.SIZE -- with ``category_area_crop``, one where no class but the
    ignore label covers more than CROP.SINGLE_CATEGORY_MAX_AREA (needs a sem_seg input); then
    PointRend's ColorAugSSDTransform (SSD's photometric distortion, as the original Mask2Former
    uses) if COLOR_AUG_SSD; then the flip."""
    augs = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if cfg.INPUT.CROP.ENABLED:
        if category_area_crop:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.COLOR_AUG_SSD works on RGB or BGR images, not {cfg.INPUT.FORMAT!r} (INPUT.FORMAT)")
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    return augs + build_flip(cfg)
