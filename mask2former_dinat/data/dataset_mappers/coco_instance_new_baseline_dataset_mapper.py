"""``coco_instance_lsj``: COCO instance segmentation training data with large-scale jitter."""

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from .build import register_dataset_mapper
from .lsj_dataset_mapper import LSJDatasetMapper
from .mask_former_instance_dataset_mapper import transformed_masks
from ...modeling.inference import masks_to_boxes
from .targets import stack_masks

__all__ = ["COCOInstanceNewBaselineDatasetMapper"]


@register_dataset_mapper("coco_instance_lsj")
class COCOInstanceNewBaselineDatasetMapper(LSJDatasetMapper):
    """Large-scale-jitter mapper for instance segmentation (flip, ResizeScale(MIN_SCALE,
    MAX_SCALE) of an IMAGE_SIZE square, FixedSizeCrop to IMAGE_SIZE x IMAGE_SIZE).

    Returns "image" uint8 [3, S, S], "padding_mask" bool [S, S] (True where the crop padded)
    and, in training, "instances" of the non-crowd annotations still visible after the crop:
    gt_classes long [N], gt_masks bool [N, S, S], gt_boxes (tight boxes of the masks).
    Masks are rasterised before the geometric transforms (see MaskFormerInstanceDatasetMapper).
    """

    def __call__(self, dataset_dict):
        dataset_dict, image, aug_input, transforms = self.read_and_augment(dataset_dict)
        # FixedSizeCrop pads segmentations with 0: the padded area is where ones become 0
        padding_mask = ~transforms.apply_segmentation(np.ones(image.shape[:2], dtype=np.uint8)).astype(bool)
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
            instances.gt_boxes = Boxes(masks_to_boxes(instances.gt_masks))
            dataset_dict["instances"] = instances
        return dataset_dict
