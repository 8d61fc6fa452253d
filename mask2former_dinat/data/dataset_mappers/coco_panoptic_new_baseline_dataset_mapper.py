"""``coco_panoptic_lsj``: COCO panoptic segmentation training data with large-scale jitter."""

from detectron2.data import detection_utils as utils
from panopticapi.utils import rgb2id

from .build import register_dataset_mapper
from .lsj_dataset_mapper import LSJDatasetMapper
from .targets import instances_from_panoptic

__all__ = ["COCOPanopticNewBaselineDatasetMapper"]


@register_dataset_mapper("coco_panoptic_lsj")
class COCOPanopticNewBaselineDatasetMapper(LSJDatasetMapper):
    """Large-scale-jitter mapper for panoptic segmentation (flip, ResizeScale(MIN_SCALE,
    MAX_SCALE) of an IMAGE_SIZE square, FixedSizeCrop to IMAGE_SIZE x IMAGE_SIZE, padding the
    image with 128 and the panoptic map with 0 = void).

    Returns "image" uint8 [3, S, S] and, in training, "instances": one target per non-crowd
    segment of "segments_info" (gt_classes long [N], gt_masks bool [N, S, S], gt_boxes); a
    segment the crop removed keeps an empty mask, as in the published training.
    """

    def __call__(self, dataset_dict):
        dataset_dict, image, aug_input, transforms = self.read_and_augment(dataset_dict)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "pan_seg_file_name" in dataset_dict:
            pan_seg = utils.read_image(dataset_dict.pop("pan_seg_file_name"), "RGB")
            pan_ids = rgb2id(transforms.apply_segmentation(pan_seg))
            dataset_dict["instances"] = instances_from_panoptic(pan_ids, dataset_dict["segments_info"], with_boxes=True)
        return dataset_dict
