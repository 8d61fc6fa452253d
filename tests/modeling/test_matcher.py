"""HungarianMatcher: finds the known assignment, is equivariant, and checks its targets."""
import pytest
import torch
from torch.nn import functional as F

from mask2former_dinat.modeling.matcher import HungarianMatcher


def random_masks(n, size=32):
    """n random blob masks [n, size, size] (bool), each a union of rectangles."""
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        for _ in range(2):
            y, x = torch.randint(0, size * 3 // 4, (2,)).tolist()
            h, w = torch.randint(size // 8, size * 3 // 8, (2,)).tolist()
            masks[i, y:y + h, x:x + w] = True
    return masks


def predictions_copying(targets_labels, target_masks, query_of_target, num_queries, num_classes):
    """Outputs of one image where query query_of_target[j] confidently predicts target j at half
    resolution and every other query predicts a random mask and "no object"."""
    logits = torch.zeros(num_queries, num_classes + 1)
    logits[:, num_classes] = 5.0
    masks = torch.randn(num_queries, 16, 16)
    small = F.interpolate(target_masks[:, None].float(), size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    for j, q in enumerate(query_of_target):
        logits[q] = 0.0
        logits[q, targets_labels[j]] = 5.0
        masks[q] = (small[j] * 2 - 1) * 8
    return logits, masks


@pytest.mark.parametrize("num_points", [0, 300])
def test_predictions_that_are_permuted_targets_are_matched_by_that_permutation(num_points):
    matcher = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=num_points)
    labels = [torch.tensor([0, 2, 1, 2]), torch.tensor([3, 1])]
    target_masks = [random_masks(4), random_masks(2)]
    query_of_target = [[5, 0, 3, 1], [2, 6]]
    outs = [predictions_copying(l, m, q, 7, 4) for l, m, q in zip(labels, target_masks, query_of_target)]
    outputs = {"pred_logits": torch.stack([o[0] for o in outs]), "pred_masks": torch.stack([o[1] for o in outs])}
    targets = [{"labels": l, "masks": m} for l, m in zip(labels, target_masks)]

    indices = matcher(outputs, targets)
    for (queries, tgts), expected in zip(indices, query_of_target):
        assert queries.dtype == tgts.dtype == torch.int64
        assert dict(zip(tgts.tolist(), queries.tolist())) == dict(enumerate(expected))


def test_permuting_the_queries_permutes_the_matching():
    matcher = HungarianMatcher(cost_class=1, cost_mask=3, cost_dice=2, num_points=200)
    outputs = {"pred_logits": torch.randn(1, 9, 5), "pred_masks": torch.randn(1, 9, 16, 16) * 3}
    targets = [{"labels": torch.tensor([0, 3, 3, 1, 2]), "masks": random_masks(5)}]
    perm = torch.randperm(9)
    permuted = {k: v[:, perm] for k, v in outputs.items()}

    torch.manual_seed(1)
    queries, tgts = matcher(outputs, targets)[0]
    torch.manual_seed(1)  # the same random points
    queries_p, tgts_p = matcher(permuted, targets)[0]
    # permuted query k is original query perm[k]
    assert dict(zip(tgts.tolist(), queries.tolist())) == dict(zip(tgts_p.tolist(), perm[queries_p].tolist()))


def test_costs_are_class_probability_sigmoid_ce_and_dice_of_each_pair():
    matcher = HungarianMatcher(cost_class=2, cost_mask=3, cost_dice=4, num_points=0)
    logits, pred_masks = torch.randn(4, 6), torch.randn(4, 8, 8)
    labels, target_masks = torch.tensor([1, 4, 1]), random_masks(3, size=8)
    cost = matcher.cost_matrix(logits, pred_masks, labels, target_masks)
    assert cost.shape == (4, 3)
    for q in range(4):
        for j in range(3):
            x, y = pred_masks[q].flatten(), target_masks[j].flatten().float()
            ce = F.binary_cross_entropy_with_logits(x, y)
            p = x.sigmoid()
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            expected = -2 * logits[q].softmax(-1)[labels[j]] + 3 * ce + 4 * dice
            torch.testing.assert_close(cost[q, j], expected)


def test_random_points_sample_predictions_and_targets_at_the_same_normalised_places():
    # A target at 4x the prediction's resolution, and the prediction is that target downsampled:
    # its own cost must be the smallest.
    matcher = HungarianMatcher(cost_class=0, cost_mask=1, cost_dice=1, num_points=500)
    target_masks = random_masks(3, size=64)
    pred_masks = (F.avg_pool2d(target_masks[:, None].float(), 4)[:, 0] * 2 - 1) * 8
    cost = matcher.cost_matrix(torch.zeros(3, 2), pred_masks, torch.zeros(3, dtype=torch.long), target_masks)
    assert (cost.argmin(dim=0) == torch.arange(3)).all()


def test_images_without_targets_get_empty_matches():
    matcher = HungarianMatcher(num_points=50)
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 8, 8)}
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)},
               {"labels": torch.tensor([1]), "masks": random_masks(1)}]
    (q0, t0), (q1, t1) = matcher(outputs, targets)
    assert q0.numel() == t0.numel() == 0 and q0.dtype == torch.int64
    assert q1.numel() == t1.numel() == 1


def test_costs_are_float32_under_autocast():
    matcher = HungarianMatcher(num_points=50)
    logits, masks = torch.randn(3, 4).bfloat16(), torch.randn(3, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = matcher.cost_matrix(logits, masks, torch.tensor([0, 2]), random_masks(2))
    assert cost.dtype == torch.float32 and torch.isfinite(cost).all()


def _good_targets():
    return [{"labels": torch.tensor([0, 1]), "masks": random_masks(2)}]


@pytest.mark.parametrize("break_targets, message", [
    (lambda t: t[0].pop("labels"), r"lacks \['labels'\]"),
    (lambda t: t[0].pop("masks"), r"lacks \['masks'\]"),
    (lambda t: t[0].update(labels=torch.tensor([0])), "2 masks; they must have one label per mask"),
    (lambda t: t[0].update(labels=torch.tensor([0, 3])), r"must lie in \[0, 3\)"),
    (lambda t: t[0].update(labels=torch.tensor([0.0, 1.0])), "1-D integer tensor"),
    (lambda t: t[0].update(masks=t[0]["masks"][0]), r"must be \[N, H, W\]"),
    (lambda t: t.append(t[0]), "one dict per image"),
])
def test_malformed_targets_are_clear_errors(break_targets, message):
    targets = _good_targets()
    break_targets(targets)
    outputs = {"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)}
    with pytest.raises(ValueError, match=message):
        HungarianMatcher(num_points=10)(outputs, targets)


def test_all_zero_costs_are_rejected():
    with pytest.raises(ValueError, match="all costs are 0"):
        HungarianMatcher(cost_class=0, cost_mask=0, cost_dice=0)
