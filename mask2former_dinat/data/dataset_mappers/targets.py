"""Per-segment training targets shared by the mappers: masks from annotations, Instances from
semantic / panoptic label maps, and padding to a size multiple."""
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F

from ...modeling.inference import masks_to_boxes

__all__ = [
    "IMAGE_PAD_VALUE",
    "annotation_mask",
    "instances_from_panoptic",
    "instances_from_semantic",
    "pad_to_multiple",
    "stack_masks",
]

IMAGE_PAD_VALUE = 128  # what padded image pixels hold (the LSJ crop pads with the same)


def annotation_mask(segmentation, height, width):
    """bool [H, W] of a detectron2 annotation's "segmentation": polygons (list of flat
    [x0, y0, x1, y1, ...]), a COCO RLE dict (compressed or not) or a [H, W] array."""
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        polygons = [np.asarray(p, dtype=np.float64).ravel().tolist() for p in segmentation]
        rles = mask_util.frPyObjects(polygons, height, width)
        return mask_util.decode(mask_util.merge(rles)).astype(bool)
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):
            segmentation = mask_util.frPyObjects(segmentation, *segmentation["size"])
        mask = mask_util.decode(segmentation).astype(bool)
    elif isinstance(segmentation, np.ndarray):
        mask = segmentation.astype(bool)
    else:
        raise ValueError(
            f"cannot make a mask from a segmentation of type {type(segmentation).__name__}: expected polygons "
            "(list of flat coordinate lists), a COCO RLE dict or a [H, W] array"
        )
    if mask.shape != (height, width):
        raise ValueError(f"segmentation mask is {mask.shape[0]}x{mask.shape[1]}, the image {height}x{width}")
    return mask


def stack_masks(masks, shape):
    """bool [N, H, W] from a list of N [H, W] arrays or tensors (N may be 0; ``shape`` = (H, W))."""
    if not masks:
        return torch.zeros((0, *shape), dtype=torch.bool)
    return torch.stack([torch.as_tensor(np.ascontiguousarray(m)).bool() for m in masks])


def instances_from_semantic(sem_seg, ignore_label):
    """One target per class present in ``sem_seg`` (long [H, W]) other than ``ignore_label``:
    gt_classes long [N] (ascending), gt_masks bool [N, H, W]."""
    classes = torch.unique(sem_seg)
    classes = classes[classes != ignore_label]
    instances = Instances(tuple(sem_seg.shape))
    instances.gt_classes = classes.to(torch.int64)
    instances.gt_masks = sem_seg[None] == classes[:, None, None]
    return instances


def instances_from_panoptic(pan_ids, segments_info, with_boxes=False):
    """One target per non-crowd segment of ``segments_info`` (in order), its mask the pixels of
    ``pan_ids`` (int [H, W]) equal to the segment id; a segment cropped away keeps an empty mask."""
    pan_ids = np.asarray(pan_ids)
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    instances = Instances(pan_ids.shape)
    instances.gt_classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    instances.gt_masks = stack_masks([pan_ids == s["id"] for s in segments], pan_ids.shape)
    if with_boxes:
        instances.gt_boxes = Boxes(masks_to_boxes(instances.gt_masks))
    return instances


def pad_to_multiple(tensor, size_divisibility, value):
    """Pad the last two dims of ``tensor`` on the bottom/right up to multiples of
    ``size_divisibility`` (<= 0: unchanged) with ``value``."""
    if size_divisibility <= 0:
        return tensor
    h, w = tensor.shape[-2:]
    pad_h = -h % size_divisibility
    pad_w = -w % size_divisibility
    if pad_h == 0 and pad_w == 0:
        return tensor
    if tensor.dtype == torch.bool:
        return F.pad(tensor.to(torch.uint8), (0, pad_w, 0, pad_h), value=int(value)).bool()
    return F.pad(tensor, (0, pad_w, 0, pad_h), value=value).contiguous()
