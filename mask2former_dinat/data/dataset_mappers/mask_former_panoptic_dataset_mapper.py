"""``mask_former_panoptic``: panoptic segmentation training data (ADE20K, Cityscapes)."""
import copy

import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from panopticapi.utils import rgb2id

from .build import register_dataset_mapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper
from .targets import instances_from_panoptic, pad_to_multiple

__all__ = ["MaskFormerPanopticDatasetMapper"]


@register_dataset_mapper("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Training mapper for panoptic segmentation: the semantic mapper's augmentation and
    padding, applied also to the panoptic PNG ("pan_seg_file_name", padded with 0 = void).
    Returns "image", "sem_seg" (if the dict has "sem_seg_file_name") and "instances": one target
    per non-crowd segment of "segments_info" (gt_classes = its category_id; a segment the crop
    removed keeps an empty mask, as in the published training)."""

    def __call__(self, dataset_dict):
        self._check_train()
        dataset_dict = copy.deepcopy(dataset_dict)
        image, sem_seg = self._read(dataset_dict, need_sem_seg=False)
        if "pan_seg_file_name" not in dataset_dict:
            raise ValueError(f"{dataset_dict['file_name']}: no 'pan_seg_file_name' in the dataset dict of a panoptic dataset")
        pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        pan_ids = torch.as_tensor(rgb2id(transforms.apply_segmentation(pan_seg)).astype("long"))
        self._finish(dataset_dict, aug_input.image, aug_input.sem_seg)
        pan_ids = pad_to_multiple(pan_ids, self.size_divisibility, 0)
        dataset_dict["instances"] = instances_from_panoptic(pan_ids.numpy(), dataset_dict["segments_info"])
        return dataset_dict
