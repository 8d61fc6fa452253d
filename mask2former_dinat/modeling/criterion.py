"""Mask2Former's training losses: match queries to ground truth, then score classes and masks."""
import torch
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm
from torch import nn
from torch.nn import functional as F

from .matcher import HungarianMatcher, check_targets

__all__ = ["SetCriterion", "build_criterion", "sigmoid_ce_loss", "dice_loss"]


def sigmoid_ce_loss(inputs, targets, num_masks):
    """Sigmoid cross-entropy averaged over points, summed over masks, divided by num_masks.

    inputs: [N, P] logits; targets: [N, P] in [0, 1].
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs, targets, num_masks):
    """1 - (smoothed) dice coefficient, summed over masks, divided by num_masks.

    inputs: [N, P] logits; targets: [N, P] in [0, 1].
    """
    probs = inputs.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def _uncertainty(logits):
    """Points whose mask logit is closest to 0 are the most uncertain."""
    return -logits.abs()


class SetCriterion(nn.Module):
    """Losses of a set of mask predictions against the ground truth of each image.

    Queries are matched one-to-one to targets by `matcher`; matched queries learn the
    target's class and mask, the others learn "no object" (class index num_classes,
    weighted by eos_coef in the cross-entropy). Mask losses are sigmoid-CE and dice at
    num_points points per mask, chosen mostly where the prediction is uncertain
    (PointRend's importance sampling), and are normalised by the number of target masks
    in the batch averaged over workers. Each entry of outputs["aux_outputs"] is matched
    and scored the same way, its loss names suffixed with "_{i}".
    """

    _loss_fns = {"labels": "loss_labels", "masks": "loss_masks"}

    def __init__(self, num_classes, matcher, weight_dict, eos_coef, losses, num_points, oversample_ratio,
                 importance_sample_ratio):
        """
        Args:
            num_classes: number of categories, without "no object".
            matcher: a module mapping (outputs, targets) to per-image (query, target) index pairs.
            weight_dict: loss name -> weight; kept for the caller, which applies it.
            eos_coef: cross-entropy weight of the "no object" class.
            losses: which losses to compute, from "labels" (loss_ce) and "masks" (loss_mask, loss_dice).
            num_points, oversample_ratio, importance_sample_ratio: point sampling of the mask losses.
        """
        super().__init__()
        unknown = [name for name in losses if name not in self._loss_fns]
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}; choose from {sorted(self._loss_fns)}")
        if num_points < 1:
            raise ValueError(f"SetCriterion: num_points must be >= 1, got {num_points}")
        if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
            raise ValueError("SetCriterion: oversample_ratio must be >= 1 and importance_sample_ratio in [0, 1], "
                             f"got {oversample_ratio} and {importance_sample_ratio}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs, targets):
        """
        Args:
            outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w], optional "aux_outputs"}.
            targets: list of B dicts {"labels": [N_b] int64 in [0, K), "masks": [N_b, H_b, W_b]}.
        Returns:
            dict of scalar losses: loss_ce, loss_mask, loss_dice, and loss_*_{i} per aux output.
        """
        logits = outputs["pred_logits"]
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"pred_logits has {logits.shape[-1]} classes; this criterion expects "
                             f"num_classes + 1 = {self.num_classes + 1}")
        check_targets(targets, logits.shape[0], self.num_classes)
        num_masks = self._num_masks(targets, logits.device)
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self._losses_of(main, targets, num_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update({f"{k}_{i}": v for k, v in self._losses_of(aux, targets, num_masks).items()})
        return losses

    def _losses_of(self, outputs, targets, num_masks):
        indices = self.matcher(outputs, targets)
        losses = {}
        for name in self.losses:
            losses.update(getattr(self, self._loss_fns[name])(outputs, targets, indices, num_masks))
        return losses

    @staticmethod
    def _num_masks(targets, device):
        """Target masks per worker, averaged over workers, at least 1."""
        num_masks = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_masks)
        return torch.clamp(num_masks / comm.get_world_size(), min=1).item()

    def loss_labels(self, outputs, targets, indices, num_masks):
        """Cross-entropy over K+1 classes; unmatched queries target "no object"."""
        logits = outputs["pred_logits"].float()
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        batch_idx, query_idx = self._query_index(indices)
        target_classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]).to(logits.device)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs, targets, indices, num_masks):
        """Point-sampled sigmoid-CE (loss_mask) and dice (loss_dice) of the matched masks."""
        batch_idx, query_idx = self._query_index(indices)
        pred_masks = outputs["pred_masks"][batch_idx, query_idx][:, None].float()  # [M, 1, h, w]
        if pred_masks.shape[0] == 0:
            zero = outputs["pred_masks"].sum() * 0.0  # keeps the graph connected
            return {"loss_mask": zero, "loss_dice": zero}
        target_masks = self._matched_target_masks(targets, indices, pred_masks.dtype)
        target_masks = target_masks.to(pred_masks.device)[:, None]
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                pred_masks, _uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
            point_labels = point_sample(target_masks, coords, align_corners=False)[:, 0]
        point_logits = point_sample(pred_masks, coords, align_corners=False)[:, 0]
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    @staticmethod
    def _query_index(indices):
        """(batch index, query index) of every matched query, image by image."""
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        query_idx = torch.cat([src for src, _ in indices])
        return batch_idx, query_idx

    @staticmethod
    def _matched_target_masks(targets, indices, dtype):
        """The matched target masks [M, H, W] in matching order, zero-padded at the bottom/right
        to the largest target size of the batch (so normalised coordinates agree across images)."""
        height = max(t["masks"].shape[-2] for t in targets)
        width = max(t["masks"].shape[-1] for t in targets)
        picked = []
        for t, (_, tgt) in zip(targets, indices):
            masks = t["masks"][tgt.to(t["masks"].device)].to(dtype)
            picked.append(F.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2])))
        return torch.cat(picked)

    def extra_repr(self):
        return (f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
                f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
                f"importance_sample_ratio={self.importance_sample_ratio}")


def build_criterion(cfg):
    """SetCriterion with its HungarianMatcher and weight_dict, from MODEL.MASK_FORMER and
    MODEL.SEM_SEG_HEAD.NUM_CLASSES. With DEEP_SUPERVISION the weight_dict also holds the
    weights of the DEC_LAYERS - 1 auxiliary predictions (loss_ce_0, ...)."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT,
                               num_points=mf.TRAIN_NUM_POINTS)
    weight_dict = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    if mf.DEEP_SUPERVISION:
        base = dict(weight_dict)
        for i in range(mf.DEC_LAYERS - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
    return SetCriterion(
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=["labels", "masks"],
        num_points=mf.TRAIN_NUM_POINTS,
        oversample_ratio=mf.OVERSAMPLE_RATIO,
        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
    )
