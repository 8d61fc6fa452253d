"""``coco_panoptic_lsj``: COCO panoptic segmentation training data with large-scale jitter."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from panopticapi.utils import rgb2id

from .augmentations import build_lsj_augmentation
from .build import register_dataset_mapper
from .targets import instances_from_panoptic

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]


@register_dataset_mapper("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper:
    """Large-scale-jitter mapper for panoptic segmentation (flip, ResizeScale(MIN_SCALE,
    MAX_SCALE) of an IMAGE_SIZE square, FixedSizeCrop to IMAGE_SIZE x IMAGE_SIZE, padding the
    image with 128 and the panoptic map with 0 = void).

    Returns "image" uint8 [3, S, S] and, in training, "instances": one target per non-crowd
    segment of "segments_info" (gt_classes long [N], gt_masks bool [N, S, S], gt_boxes); a
    segment the crop removed keeps an empty mask, as in the published training.
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
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "pan_seg_file_name" in dataset_dict:
            pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
            pan_ids = rgb2id(transforms.apply_segmentation(pan_seg))
            dataset_dict["instances"] = instances_from_panoptic(pan_ids, dataset_dict["segments_info"], with_boxes=True)
        return dataset_dict
