"""Post-processing of one image's mask-classification output into detectron2 results.

Shared by the MaskFormer meta-architecture and test-time augmentation. Every function
takes the outputs of one image:
  mask_cls:  [Q, K+1] class logits per query (the last column is "no object"),
  mask_pred: [Q, H, W] mask logits per query, already at the output resolution.
"""
from typing import Collection, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from .panoptic_segments import assign_segments

__all__ = ["semantic_inference", "panoptic_inference", "instance_inference", "masks_to_boxes"]


def _check_shapes(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> None:
    if mask_cls.dim() != 2 or mask_pred.dim() != 3 or mask_cls.shape[0] != mask_pred.shape[0]:
        raise ValueError(
            "expected one image's outputs: mask_cls [Q, K+1] and mask_pred [Q, H, W] with the same Q; "
            f"got {tuple(mask_cls.shape)} and {tuple(mask_pred.shape)} (index the batch first)"
        )


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-class probability maps [K, H, W]: sum over queries of P(class) * sigmoid(mask)."""
    _check_shapes(mask_cls, mask_pred)
    class_prob = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", class_prob, mask_pred.sigmoid())


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    object_mask_threshold: float,
    overlap_threshold: float,
    thing_ids: Collection[int],
) -> Tuple[torch.Tensor, List[dict]]:
    """Panoptic segmentation (int32 [H, W] segment ids, 0 = void) and its segments_info.

    A query is kept when its most likely class is not "no object" and that class's
    probability exceeds `object_mask_threshold`. Each pixel goes to the kept query with
    the highest score * sigmoid(mask); a query becomes a segment where it wins and its own
    mask is >= 0.5, unless that area is empty or less than `overlap_threshold` of its
    whole mask. Stuff queries of the same class merge into one segment. `thing_ids` are
    the contiguous class ids of thing classes.
    """
    _check_shapes(mask_cls, mask_pred)
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep].sigmoid()

    panoptic_seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32, device=mask_pred.device)
    segments_info: List[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info

    n = cur_masks.shape[0]
    winner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # [H, W]
    own = cur_masks >= 0.5  # [N, H, W]
    winner_owns = own.gather(0, winner[None])[0]  # the winning query's own mask covers the pixel
    # Per query: pixels won, pixels of its own mask, pixels it would label (won and own).
    won_area = torch.bincount(winner.flatten(), minlength=n).tolist()
    own_area = own.flatten(1).sum(1, dtype=torch.int32).tolist()
    labelled_area = torch.bincount(winner[winner_owns], minlength=n).tolist()

    segment_of_query, segments_info = assign_segments(
        cur_classes.tolist(), won_area, own_area, labelled_area,
        overlap_threshold=overlap_threshold, thing_ids=thing_ids,
    )
    segment_of_query = torch.tensor(segment_of_query, dtype=torch.int32, device=mask_pred.device)
    panoptic_seg = torch.where(winner_owns, segment_of_query[winner], panoptic_seg)
    return panoptic_seg, segments_info


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes [N, 4] (float32, exclusive right/bottom edge) of boolean masks
    [N, H, W]; an empty mask gets an all-zero box (detectron2's BitMasks convention)."""
    n, h, w = masks.shape
    boxes = torch.zeros(n, 4, dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    nonempty = cols.any(dim=1)
    # argmax returns the first maximal index: the first True from each side.
    x0 = cols.int().argmax(dim=1)
    x1 = w - cols.flip(1).int().argmax(dim=1)
    y0 = rows.int().argmax(dim=1)
    y1 = h - rows.flip(1).int().argmax(dim=1)
    boxes[nonempty] = torch.stack([x0, y0, x1, y1], dim=1)[nonempty].float()
    return boxes


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    topk: int,
    thing_ids: Optional[Collection[int]] = None,
) -> Instances:
    """The `topk` best (query, class) pairs as detectron2 Instances.

    Each query may appear with several classes. When `thing_ids` is given (panoptic
    models, whose queries also predict stuff), only thing classes are kept. Fields:
    pred_masks (bool [N, H, W], mask logit > 0), pred_boxes (the masks' bounding boxes),
    scores (class probability * mean mask probability inside the mask), pred_classes.
    """
    _check_shapes(mask_cls, mask_pred)
    num_classes = mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1].flatten()
    k = min(topk, scores.numel())
    # Unsorted like the original, so that results come in the same order.
    scores_per_image, topk_indices = scores.topk(k, sorted=False)
    labels_per_image = topk_indices % num_classes
    mask_pred = mask_pred[topk_indices // num_classes]

    if thing_ids is not None:
        thing = torch.zeros(num_classes + 1, dtype=torch.bool, device=mask_cls.device)
        thing[torch.as_tensor(sorted(int(i) for i in thing_ids), dtype=torch.long, device=mask_cls.device)] = True
        keep = thing[labels_per_image]
        scores_per_image, labels_per_image, mask_pred = scores_per_image[keep], labels_per_image[keep], mask_pred[keep]

    result = Instances(tuple(mask_pred.shape[-2:]))
    pred_masks = mask_pred > 0
    area = pred_masks.flatten(1).sum(1, dtype=torch.int32)  # (int32: much faster than bool's default int64)
    mask_scores = mask_pred.sigmoid().mul_(pred_masks).flatten(1).sum(1) / (area + 1e-6)
    result.pred_masks = pred_masks
    result.pred_boxes = Boxes(masks_to_boxes(pred_masks))
    result.scores = scores_per_image * mask_scores
    result.pred_classes = labels_per_image
    return result
