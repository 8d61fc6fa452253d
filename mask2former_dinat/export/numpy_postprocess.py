"""Post-processing of the exported model's raw outputs with NumPy only (no PyTorch).

The same rules as mask2former_dinat/modeling/inference.py and MaskFormer's inference, on the
graph outputs of one image: `pred_logits` [Q, K+1] (last column "no object") and `pred_masks`
[Q, H_pad/4, W_pad/4]. `masks_to_image` brings the masks to the image as the model does
(bilinear upsampling to the padded input, align_corners=False, then the padding cropped);
`semantic_inference`, `panoptic_inference` and `instance_inference` then give the results as
NumPy arrays. This file imports nothing but NumPy and the import-free panoptic rule it shares
with PyTorch's post-processing (modeling/panoptic_segments.py), so a deployment can copy the two
beside onnx_runtime.py and run with onnxruntime and NumPy alone.
"""
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

try:
    from ..modeling.panoptic_segments import assign_segments
except ImportError:  # copied beside panoptic_segments.py, outside the package
    from panoptic_segments import assign_segments

__all__ = [
    "resize_bilinear",
    "masks_to_image",
    "semantic_inference",
    "panoptic_inference",
    "instance_inference",
    "masks_to_boxes",
]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _axis_weights(n_in: int, n_out: int):
    """Source indices (i0, i1) and weights of i1 for a bilinear resize of one axis, as
    F.interpolate(mode="bilinear", align_corners=False) computes them."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(scale) - 0.5, 0.0).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """[..., h, w] float32 -> [..., H, W], bilinear with align_corners=False."""
    y0, y1, wy = _axis_weights(x.shape[-2], size[0])
    x0, x1, wx = _axis_weights(x.shape[-1], size[1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def masks_to_image(pred_masks: np.ndarray, padded_size: Sequence[int], image_size: Sequence[int]) -> np.ndarray:
    """[Q, H_pad/4, W_pad/4] mask logits -> [Q, H, W]: upsampled to the padded input, padding cropped."""
    masks = resize_bilinear(pred_masks.astype(np.float32), tuple(padded_size))
    return masks[:, : image_size[0], : image_size[1]]


def _check_shapes(mask_cls: np.ndarray, mask_pred: np.ndarray) -> None:
    if mask_cls.ndim != 2 or mask_pred.ndim != 3 or mask_cls.shape[0] != mask_pred.shape[0]:
        raise ValueError(
            "expected one image's outputs: mask_cls [Q, K+1] and mask_pred [Q, H, W] with the same Q; "
            f"got {tuple(mask_cls.shape)} and {tuple(mask_pred.shape)} (index the batch first)"
        )


def semantic_inference(mask_cls: np.ndarray, mask_pred: np.ndarray) -> np.ndarray:
    """Per-class probability maps [K, H, W]: sum over queries of P(class) * sigmoid(mask)."""
    _check_shapes(mask_cls, mask_pred)
    class_prob = _softmax(mask_cls.astype(np.float32))[:, :-1]
    q, h, w = mask_pred.shape
    return (class_prob.T @ _sigmoid(mask_pred).reshape(q, h * w)).reshape(-1, h, w)


def panoptic_inference(mask_cls: np.ndarray, mask_pred: np.ndarray, *, object_mask_threshold: float,
                       overlap_threshold: float, thing_ids: Collection[int]) -> Tuple[np.ndarray, List[Dict]]:
    """int32 [H, W] segment ids (0 = void) and segments_info; rules as inference.panoptic_inference."""
    _check_shapes(mask_cls, mask_pred)
    num_classes = mask_cls.shape[-1] - 1
    probs = _softmax(mask_cls.astype(np.float32))
    scores, labels = probs.max(-1), probs.argmax(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], _sigmoid(mask_pred[keep])
    panoptic_seg = np.zeros(mask_pred.shape[-2:], dtype=np.int32)
    segments_info: List[Dict] = []
    n = cur_masks.shape[0]
    if n == 0:
        return panoptic_seg, segments_info
    winner = (cur_scores[:, None, None] * cur_masks).argmax(0)
    own = cur_masks >= 0.5
    winner_owns = np.take_along_axis(own, winner[None], 0)[0]
    won_area = np.bincount(winner.ravel(), minlength=n)
    own_area = own.reshape(n, -1).sum(1)
    labelled_area = np.bincount(winner[winner_owns], minlength=n)
    segment_of_query, segments_info = assign_segments(
        cur_classes.tolist(), won_area.tolist(), own_area.tolist(), labelled_area.tolist(),
        overlap_threshold=overlap_threshold, thing_ids=thing_ids,
    )
    segment_of_query = np.asarray(segment_of_query, dtype=np.int32)
    panoptic_seg = np.where(winner_owns, segment_of_query[winner], panoptic_seg).astype(np.int32)
    return panoptic_seg, segments_info


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight XYXY boxes [N, 4] float32 (exclusive right/bottom) of bool masks [N, H, W]; empty -> zeros."""
    n, h, w = masks.shape
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    cols, rows = masks.any(1), masks.any(2)
    nonempty = cols.any(1)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    boxes[nonempty] = np.stack([x0, y0, x1, y1], 1)[nonempty]
    return boxes


def instance_inference(mask_cls: np.ndarray, mask_pred: np.ndarray, *, topk: int,
                       thing_ids: Optional[Collection[int]] = None) -> Dict[str, np.ndarray]:
    """The `topk` best (query, class) pairs, highest final score first: {"pred_masks" bool [N, H, W],
    "pred_boxes" [N, 4], "scores" [N], "pred_classes" [N]}; rules as inference.instance_inference
    (which returns them unsorted, in the order torch.topk happens to give)."""
    _check_shapes(mask_cls, mask_pred)
    num_classes = mask_cls.shape[-1] - 1
    scores = _softmax(mask_cls.astype(np.float32))[:, :-1].ravel()
    k = min(topk, scores.size)
    top = np.argsort(-scores, kind="stable")[:k]
    scores_per_image, labels = scores[top], top % num_classes
    masks = mask_pred[top // num_classes]
    if thing_ids is not None:
        keep = np.isin(labels, np.asarray(sorted(int(i) for i in thing_ids), dtype=np.int64))
        scores_per_image, labels, masks = scores_per_image[keep], labels[keep], masks[keep]
    pred_masks = masks > 0
    area = pred_masks.reshape(len(masks), -1).sum(1)
    mask_scores = (_sigmoid(masks) * pred_masks).reshape(len(masks), -1).sum(1) / (area + 1e-6)
    final = (scores_per_image * mask_scores).astype(np.float32)
    order = np.argsort(-final, kind="stable")
    return {
        "pred_masks": pred_masks[order],
        "pred_boxes": masks_to_boxes(pred_masks)[order],
        "scores": final[order],
        "pred_classes": labels[order].astype(np.int64),
    }
