"""``coco_instance_lsj``: COCO instance segmentation training data with large-scale jitter."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .augmentations import build_lsj_augmentation
from .build import register_dataset_mapper
from .mask_former_instance_dataset_mapper import transformed_masks
from .targets import mask_boxes, stack_masks

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]


@register_dataset_mapper("coco_instance_lsj")
class COCOInstanceNewBaselineDatasetMapper:
    """Large-scale-jitter mapper for instance segmentation (flip, ResizeScale(MIN_SCALE,
    MAX_SCALE) of an IMAGE_SIZE square, FixedSizeCrop to IMAGE_SIZE x IMAGE_SIZE).

    Returns "image" uint8 [3, S, S], "padding_mask" bool [S, S] (True where the crop padded)
    and, in training, "instances" of the non-crowd annotations still visible after the crop:
    gt_classes long [N], gt_masks bool [N, S, S], gt_boxes (tight boxes of the masks).
    Masks are rasterised before the geometric transforms (see MaskFormerInstanceDatasetMapper).
    """

    @configurable
    def __init__(self, is_train=True, *, tfm_gens, image_format):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(tfm_gens)
        self.image_format = image_format
        logging.getLogger(__name__).info(f"[{type(self).__name__}] training augmentations: {tfm_gens}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        if not is_train:
            raise ValueError("the large-scale-jitter mappers only build training augmentation")
        return {"is_train": is_train, "tfm_gens": build_lsj_augmentation(cfg), "image_format": cfg.INPUT.FORMAT}

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        # FixedSizeCrop pads segmentations with 0: the padded area is where ones become 0
        padding_mask = ~transforms.apply_segmentation(np.ones(image.shape[:2], dtype=np.uint8)).astype(bool)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        dataset_dict["padding_mask"] = torch.as_tensor(np.ascontiguousarray(padding_mask))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            classes, masks = transformed_masks(dataset_dict.pop("annotations"), transforms, image.shape[:2])
            keep = [i for i, m in enumerate(masks) if m.any()]
            instances = Instances(aug_input.image.shape[:2])
            instances.gt_classes = torch.tensor([classes[i] for i in keep], dtype=torch.int64)
            instances.gt_masks = stack_masks([masks[i] for i in keep], aug_input.image.shape[:2])
            instances.gt_boxes = mask_boxes(instances.gt_masks)
            dataset_dict["instances"] = instances
        return dataset_dict
