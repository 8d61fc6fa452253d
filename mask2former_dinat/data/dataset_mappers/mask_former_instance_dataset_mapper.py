"""``mask_former_instance``: instance segmentation training data (ADE20K, Cityscapes)."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .augmentations import build_maskformer_augmentation
from .build import register_dataset_mapper
from .targets import IMAGE_PAD_VALUE, annotation_mask, pad_to_multiple, stack_masks

__all__ = ["MaskFormerInstanceDatasetMapper", "transformed_masks"]


def transformed_masks(annotations, transforms, input_shape):
    """(classes, masks) of the non-crowd annotations: each mask rasterised at the input size
    (polygons, RLE or arrays) and put through ``transforms`` like a segmentation."""
    classes, masks = [], []
    for anno in annotations:
        if anno.get("iscrowd", 0):
            continue
        mask = annotation_mask(anno["segmentation"], *input_shape).astype(np.uint8)
        masks.append(transforms.apply_segmentation(mask).astype(bool))
        classes.append(int(anno["category_id"]))
    return classes, masks


@register_dataset_mapper("mask_former_instance")
class MaskFormerInstanceDatasetMapper:
    """Training mapper for instance segmentation: ResizeShortestEdge, a random crop, ColorAugSSD
    and a flip; pads to a multiple of SIZE_DIVISIBILITY (image 128, masks 0). Returns "image"
    uint8 [3, H, W] and "instances" (gt_classes long [N], gt_masks bool [N, H, W]) of the
    non-crowd annotations.

    Masks are rasterised before the geometric transforms (published training transformed
    polygons, which needs shapely); they differ at most on boundary pixels.
    """

    @configurable
    def __init__(self, is_train=True, *, augmentations, image_format, size_divisibility):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.size_divisibility = size_divisibility
        logging.getLogger(__name__).info(f"[{type(self).__name__}] training augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_maskformer_augmentation(cfg, category_area_crop=False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def __call__(self, dataset_dict):
        if not self.is_train:
            raise ValueError(f"{type(self).__name__} is for training only; for inference use detectron2's DatasetMapper(cfg, False)")
        dataset_dict = copy.deepcopy(dataset_dict)
        if "annotations" not in dataset_dict:
            raise ValueError(f"{dataset_dict['file_name']}: no 'annotations' in the dataset dict of an instance dataset")
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        classes, masks = transformed_masks(dataset_dict.pop("annotations"), transforms, image.shape[:2])
        image = aug_input.image

        gt_masks = pad_to_multiple(stack_masks(masks, image.shape[:2]), self.size_divisibility, 0)
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["image"] = pad_to_multiple(image, self.size_divisibility, IMAGE_PAD_VALUE)
        instances = Instances(tuple(dataset_dict["image"].shape[-2:]))
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = gt_masks
        dataset_dict["instances"] = instances
        return dataset_dict
