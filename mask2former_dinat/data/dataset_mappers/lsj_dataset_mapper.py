"""What the two large-scale-jitter mappers (``coco_panoptic_lsj``, ``coco_instance_lsj``) share:
the augmentation from cfg.INPUT and reading + augmenting the image."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_lsj_augmentation

__all__ = ["LSJDatasetMapper"]


class LSJDatasetMapper:
    """Base of the LSJ mappers: subclasses turn the annotations into targets in ``__call__``."""

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

    def read_and_augment(self, dataset_dict):
        """-> (a copy of dataset_dict with "image" uint8 [3, S, S], the original image [H, W, 3],
        the AugInput after augmentation, the applied transforms)."""
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return dataset_dict, image, aug_input, transforms
