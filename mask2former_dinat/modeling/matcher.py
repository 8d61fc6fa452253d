"""Hungarian matching of predicted masks to ground-truth masks (one-to-one, per image)."""
import torch
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

__all__ = ["HungarianMatcher", "batch_sigmoid_ce_cost", "batch_dice_cost", "check_targets"]


def batch_sigmoid_ce_cost(inputs, targets):
    """Mean sigmoid cross-entropy of every prediction against every target.

    inputs: [N, P] mask logits at P points; targets: [M, P] in [0, 1] -> [N, M].
    """
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    cost = torch.einsum("np,mp->nm", pos, targets) + torch.einsum("np,mp->nm", neg, 1 - targets)
    return cost / inputs.shape[1]


def batch_dice_cost(inputs, targets):
    """1 - (smoothed) dice coefficient of every prediction against every target.

    inputs: [N, P] mask logits at P points; targets: [M, P] in [0, 1] -> [N, M].
    """
    probs = inputs.sigmoid()
    numerator = 2 * torch.einsum("np,mp->nm", probs, targets)
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def check_targets(targets, batch_size, num_classes):
    """Raise ValueError unless `targets` is a list of batch_size dicts with "labels" [N] integer
    class ids in [0, num_classes) and "masks" [N, H, W]."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch_size:
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list with one dict per image ({batch_size}), got {got}")
    for b, t in enumerate(targets):
        missing = [k for k in ("labels", "masks") if k not in t]
        if missing:
            raise ValueError(f"targets[{b}] lacks {missing}: each target needs 'labels' [N] and 'masks' [N, H, W]")
        labels, masks = t["labels"], t["masks"]
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"targets[{b}]['labels'] must be a 1-D integer tensor, got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        if masks.dim() != 3:
            raise ValueError(f"targets[{b}]['masks'] must be [N, H, W], got {tuple(masks.shape)}")
        if masks.shape[0] != labels.shape[0]:
            raise ValueError(f"targets[{b}] has {labels.shape[0]} labels but {masks.shape[0]} masks; "
                             "they must have one label per mask")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"targets[{b}]['labels'] must lie in [0, {num_classes}), got values from "
                             f"{int(labels.min())} to {int(labels.max())}")


class HungarianMatcher(nn.Module):
    """Assigns each ground-truth mask of an image to one query, minimising
    cost_class * (-p(target class)) + cost_mask * sigmoid-CE + cost_dice * dice-loss.

    The mask costs are evaluated at num_points points drawn uniformly at random (the same
    points for predictions and targets, in coordinates normalised to each mask's extent);
    num_points=0 evaluates them at every pixel centre of the prediction grid.
    Unmatched queries are meant to predict "no object".
    """

    def __init__(self, cost_class: float = 1, cost_mask: float = 1, cost_dice: float = 1, num_points: int = 0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0; at least one must be non-zero")
        if num_points < 0:
            raise ValueError(f"HungarianMatcher: num_points must be >= 0, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs, targets):
        """
        Args:
            outputs: {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, h, w]} (other keys ignored).
            targets: list of B dicts {"labels": [N_b] int64, "masks": [N_b, H, W]}.
        Returns:
            list of B pairs (query_indices, target_indices), int64 tensors of length min(Q, N_b):
            query query_indices[k] is matched to target target_indices[k].
        """
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        check_targets(targets, logits.shape[0], logits.shape[-1] - 1)
        indices = []
        for b, t in enumerate(targets):
            cost = self.cost_matrix(logits[b], masks[b], t["labels"], t["masks"]).cpu()
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    @torch.no_grad()
    def cost_matrix(self, logits, pred_masks, labels, target_masks):
        """The matching cost of one image, float32 [Q, N], from logits [Q, K+1], pred_masks
        [Q, h, w] (logits), labels [N] and target_masks [N, H, W]."""
        num_queries = logits.shape[0]
        if labels.numel() == 0:
            return torch.zeros(num_queries, 0, dtype=torch.float32, device=logits.device)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            cost_class = -logits.float().softmax(-1)[:, labels]
            pred_masks = pred_masks.float()
            coords = self._point_coords(pred_masks)
            pred_points = point_sample(pred_masks[:, None], coords.expand(num_queries, -1, -1),
                                       align_corners=False)[:, 0]
            tgt_points = point_sample(target_masks.float()[:, None], coords.expand(labels.shape[0], -1, -1),
                                      align_corners=False)[:, 0]
            cost = self.cost_class * cost_class
            if self.cost_mask:
                cost = cost + self.cost_mask * batch_sigmoid_ce_cost(pred_points, tgt_points)
            if self.cost_dice:
                cost = cost + self.cost_dice * batch_dice_cost(pred_points, tgt_points)
        return cost

    def _point_coords(self, pred_masks):
        """[1, P, 2] (x, y) in [0, 1]: random points, or the prediction grid's pixel centres."""
        if self.num_points > 0:
            return torch.rand(1, self.num_points, 2, device=pred_masks.device)
        h, w = pred_masks.shape[-2:]
        ys = (torch.arange(h, device=pred_masks.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=pred_masks.device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack((grid_x, grid_y), dim=-1).reshape(1, h * w, 2)

    def extra_repr(self):
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")
