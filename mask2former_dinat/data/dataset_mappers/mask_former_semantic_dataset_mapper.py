"""``mask_former_semantic``: semantic segmentation training data (ADE20K-150, Cityscapes)."""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import build_maskformer_augmentation
from .build import register_dataset_mapper
from .targets import IMAGE_PAD_VALUE, instances_from_semantic, pad_to_multiple

__all__ = ["MaskFormerSemanticDatasetMapper"]


@register_dataset_mapper("mask_former_semantic")
class MaskFormerSemanticDatasetMapper:
    """Training mapper for semantic segmentation.

    Reads "file_name" and "sem_seg_file_name", applies ResizeShortestEdge, a crop in which no
    single class dominates (CROP.SINGLE_CATEGORY_MAX_AREA), ColorAugSSD and a flip, pads to a
    multiple of SIZE_DIVISIBILITY (image with 128, labels with the ignore label) and returns
    "image" uint8 [3, H, W], "sem_seg" long [H, W] and "instances" (one target per class
    present: gt_classes long [N], gt_masks bool [N, H, W]).
    """

    @configurable
    def __init__(self, is_train=True, *, augmentations, image_format, ignore_label, size_divisibility):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        logging.getLogger(__name__).info(f"[{type(self).__name__}] training augmentations: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None
        ignore_label = meta.get("ignore_label", None) if meta is not None else None
        return {
            "is_train": is_train,
            "augmentations": build_maskformer_augmentation(cfg, category_area_crop=True),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE if ignore_label is None else ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def _check_train(self):
        if not self.is_train:
            raise ValueError(
                f"{type(self).__name__} is for training only; for inference use detectron2's DatasetMapper(cfg, False)"
            )

    def _read(self, dataset_dict, need_sem_seg):
        """(image uint8 [H, W, 3], sem_seg float64 [H, W] or None) of a copied dataset dict."""
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        if "annotations" in dataset_dict:
            raise ValueError(
                f"{dataset_dict['file_name']}: {type(self).__name__} takes label maps, not 'annotations'; "
                "use mask_former_instance for instance datasets"
            )
        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            # float64 because torch has no uint16 interpolation
            sem_seg = utils.read_image(dataset_dict.pop("sem_seg_file_name")).astype("double")
        elif need_sem_seg:
            raise ValueError(f"{dataset_dict['file_name']}: no 'sem_seg_file_name' in the dataset dict of a semantic dataset")
        return image, sem_seg

    def _finish(self, dataset_dict, image, sem_seg):
        """Pad and store "image" (and "sem_seg") as tensors; returns the padded sem_seg tensor."""
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["image"] = pad_to_multiple(image, self.size_divisibility, IMAGE_PAD_VALUE)
        if sem_seg is None:
            return None
        sem_seg = pad_to_multiple(torch.as_tensor(sem_seg.astype("long")), self.size_divisibility, self.ignore_label)
        dataset_dict["sem_seg"] = sem_seg
        return sem_seg

    def __call__(self, dataset_dict):
        self._check_train()
        dataset_dict = copy.deepcopy(dataset_dict)
        image, sem_seg = self._read(dataset_dict, need_sem_seg=True)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        sem_seg = self._finish(dataset_dict, aug_input.image, aug_input.sem_seg)
        dataset_dict["instances"] = instances_from_semantic(sem_seg, self.ignore_label)
        return dataset_dict
