"""SetCriterion and build_criterion: loss values, normalisation, deep supervision, training signal."""
import math

import pytest
import torch
from helpers.configs import tiny_head_opts
from torch.nn import functional as F

from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling.criterion import SetCriterion, build_criterion, dice_loss, sigmoid_ce_loss
from mask2former_dinat.modeling.matcher import HungarianMatcher
from mask2former_dinat.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder

NUM_CLASSES = 4
QUERIES = [[4, 1], [0, 5, 2]]  # the query of each target of two_image_targets()


def rectangles(boxes, size=32):
    """Masks [len(boxes), size, size] (bool) filled inside (y0, x0, y1, x1)."""
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return masks


def criterion(num_points=256, eos_coef=0.1, importance_sample_ratio=0.75, matcher=None):
    if matcher is None:
        matcher = HungarianMatcher(cost_class=2, cost_mask=5, cost_dice=5, num_points=num_points)
    weights = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    return SetCriterion(NUM_CLASSES, matcher, weights, eos_coef=eos_coef, losses=["labels", "masks"],
                        num_points=num_points, oversample_ratio=3.0, importance_sample_ratio=importance_sample_ratio)


def fixed_matcher(outputs, targets):
    """The matching of outputs_for(two_image_targets(), QUERIES)."""
    return [(torch.tensor(q), torch.arange(len(q))) for q in QUERIES]


def two_image_targets(scale=1):
    """Two images of 32*scale pixels, with 2 and 3 rectangular objects."""
    boxes = [[(0, 0, 16, 16), (16, 8, 32, 32)], [(4, 4, 12, 28), (20, 0, 30, 10), (20, 16, 30, 30)]]
    labels = [[1, 3], [0, 2, 2]]
    return [{"labels": torch.tensor(l), "masks": rectangles([[c * scale for c in box] for box in b], 32 * scale)}
            for l, b in zip(labels, boxes)]


def outputs_for(targets, query_of_target, num_queries=6, mask_logit=20.0):
    """Predictions where query query_of_target[b][j] is target j of image b with confident logits
    (masks at the targets' resolution) and the other queries predict "no object"."""
    logits = torch.full((len(targets), num_queries, NUM_CLASSES + 1), -mask_logit)
    logits[..., NUM_CLASSES] = mask_logit
    masks = torch.full((len(targets), num_queries) + tuple(targets[0]["masks"].shape[-2:]), -mask_logit)
    for b, (t, queries) in enumerate(zip(targets, query_of_target)):
        for j, q in enumerate(queries):
            logits[b, q] = -mask_logit
            logits[b, q, t["labels"][j]] = mask_logit
            masks[b, q] = (t["masks"][j].float() * 2 - 1) * mask_logit
    return {"pred_logits": logits, "pred_masks": masks}


def test_point_losses_vanish_for_confident_correct_logits_and_grow_for_wrong_ones():
    labels = (torch.rand(3, 100) > 0.5).float()
    right, wrong = (labels * 2 - 1) * 20, (1 - labels * 2) * 20
    assert sigmoid_ce_loss(right, labels, 3).item() < 1e-6 and dice_loss(right, labels, 3).item() < 1e-2
    assert sigmoid_ce_loss(wrong, labels, 3).item() > 10 and dice_loss(wrong, labels, 3).item() > 0.9
    # Normalised by num_masks, not by the number of masks given.
    torch.testing.assert_close(sigmoid_ce_loss(wrong, labels, 6), sigmoid_ce_loss(wrong, labels, 3) / 2)


def test_perfect_predictions_have_near_zero_losses_and_wrong_ones_do_not():
    # Only points that fall between a mask's edge pixels (where bilinear sampling blurs the
    # target into soft labels) cost anything: a thin band at 128 pixels, with uniform points.
    fine_targets = two_image_targets(scale=4)
    losses = criterion(num_points=2048, importance_sample_ratio=0.0)(outputs_for(fine_targets, QUERIES), fine_targets)
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"}
    assert losses["loss_ce"].item() < 1e-6
    assert losses["loss_mask"].item() < 0.05 and losses["loss_dice"].item() < 0.02, losses
    # Importance sampling concentrates on those edges, yet stays far below wrong predictions.
    targets = two_image_targets()
    perfect = outputs_for(targets, QUERIES)
    focused = criterion()(perfect, targets)
    inverted = {"pred_logits": perfect["pred_logits"], "pred_masks": -perfect["pred_masks"]}
    wrong = criterion()(inverted, targets)
    assert wrong["loss_mask"] > 10 * focused["loss_mask"] and wrong["loss_mask"] > 5
    assert wrong["loss_dice"] > 5 * focused["loss_dice"] and wrong["loss_dice"] > 0.5
    swapped_classes = {"pred_logits": perfect["pred_logits"].roll(1, dims=-1), "pred_masks": perfect["pred_masks"]}
    assert criterion()(swapped_classes, targets)["loss_ce"] > 1.0


def test_class_loss_is_weighted_cross_entropy_with_unmatched_queries_as_no_object():
    targets = two_image_targets()
    outputs = outputs_for(targets, QUERIES, mask_logit=20.0)
    outputs["pred_logits"] = torch.randn_like(outputs["pred_logits"])
    crit = criterion(eos_coef=0.3, matcher=fixed_matcher)  # pinned, so the expected classes are known
    expected_classes = torch.full((2, 6), NUM_CLASSES)
    expected_classes[0, [4, 1]] = torch.tensor([1, 3])
    expected_classes[1, [0, 5, 2]] = torch.tensor([0, 2, 2])
    weight = torch.tensor([1.0] * NUM_CLASSES + [0.3])
    expected = F.cross_entropy(outputs["pred_logits"].transpose(1, 2), expected_classes, weight=weight)
    torch.testing.assert_close(crit(outputs, targets)["loss_ce"], expected)


def test_mask_losses_are_normalised_by_the_number_of_target_masks():
    # Logit 0 everywhere: every matched mask has sigmoid-CE log(2) at every point, so the
    # normalised loss is log(2) whatever the points and the number of masks per image.
    targets = two_image_targets()
    outputs = {"pred_logits": torch.randn(2, 6, NUM_CLASSES + 1), "pred_masks": torch.zeros(2, 6, 8, 8)}
    loss = criterion()(outputs, targets)["loss_mask"]
    assert loss.item() == pytest.approx(math.log(2), rel=1e-5)


def test_targets_of_different_sizes_are_zero_padded_to_a_common_size():
    targets = two_image_targets()
    small = dict(targets[1], masks=targets[1]["masks"][:, :24, :20])
    padded = dict(targets[1], masks=F.pad(small["masks"], (0, 12, 0, 8)))
    outputs = {"pred_logits": torch.randn(2, 6, NUM_CLASSES + 1), "pred_masks": torch.randn(2, 6, 8, 8) * 4}
    crit = criterion(matcher=fixed_matcher)
    torch.manual_seed(3)
    got = crit(outputs, [targets[0], small])
    torch.manual_seed(3)
    expected = crit(outputs, [targets[0], padded])
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_images_without_objects_train_every_query_to_no_object():
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}]
    logits = torch.randn(1, 6, NUM_CLASSES + 1, requires_grad=True)
    masks = torch.randn(1, 6, 8, 8, requires_grad=True)
    losses = criterion()({"pred_logits": logits, "pred_masks": masks}, empty)
    expected_ce = F.cross_entropy(logits[0].detach(), torch.full((6,), NUM_CLASSES))
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    sum(losses.values()).backward()
    assert logits.grad[0, :, NUM_CLASSES].lt(0).all()  # raising "no object" lowers the loss

    # Beside an image with objects, the empty one contributes only its class loss.
    mixed = criterion()(outputs_for(two_image_targets(), QUERIES),
                        [empty[0], two_image_targets()[1]])
    assert all(torch.isfinite(v) for v in mixed.values())


def tiny_cfg(deep_supervision=True):
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 8
    cfg.merge_from_list(tiny_head_opts(hidden_dim=16, queries=6, nheads=2, dim_feedforward=32, dec_layers=3, train_num_points=256))
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = deep_supervision
    return cfg


def test_deep_supervision_scores_every_aux_output_with_suffixed_keys():
    cfg = tiny_cfg()
    crit = build_criterion(cfg)
    decoder = MultiScaleMaskedTransformerDecoder(cfg, in_channels=16)
    feats = [torch.randn(2, 16, s, s) for s in (2, 4, 8)]
    outputs = decoder(feats, torch.randn(2, 8, 16, 16))
    losses = crit(outputs, two_image_targets())
    expected = {f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    assert set(losses) == expected == set(crit.weight_dict)
    assert crit.weight_dict["loss_mask_1"] == cfg.MODEL.MASK_FORMER.MASK_WEIGHT
    assert set(build_criterion(tiny_cfg(deep_supervision=False)).weight_dict) == {"loss_ce", "loss_mask", "loss_dice"}


def test_build_criterion_reads_the_loss_config():
    cfg = tiny_cfg()
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.25
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 2.0
    crit = build_criterion(cfg)
    assert crit.state_dict()["empty_weight"].tolist() == [1.0] * NUM_CLASSES + [0.25]
    assert crit.matcher.cost_class == 2.0 and crit.matcher.num_points == 256
    assert crit.num_points == 256 and crit.oversample_ratio == 3.0 and crit.importance_sample_ratio == 0.75


def test_a_few_adam_steps_on_the_decoder_lower_the_weighted_loss():
    cfg = tiny_cfg()
    crit = build_criterion(cfg)
    decoder = MultiScaleMaskedTransformerDecoder(cfg, in_channels=16)
    feats = [torch.randn(1, 16, s, s) for s in (2, 4, 8)]
    targets = two_image_targets()[:1]
    # Mask features that contain the objects, as a pixel decoder's would.
    mask_features = torch.randn(1, 8, 16, 16)
    mask_features[0, :2] = F.interpolate(targets[0]["masks"][None].float(), size=(16, 16), mode="bilinear",
                                         align_corners=False)[0] * 2 - 1

    def total_loss(seed):
        torch.manual_seed(seed)
        losses = crit(decoder(feats, mask_features), targets)
        return sum(crit.weight_dict[k] * v for k, v in losses.items())

    with torch.no_grad():
        before = total_loss(seed=7).item()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for step in range(10):
        optimizer.zero_grad()
        total_loss(seed=step).backward()
        optimizer.step()
    with torch.no_grad():
        after = total_loss(seed=7).item()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("break_targets, message", [
    (lambda t: t[0].pop("masks"), r"lacks \['masks'\]"),
    (lambda t: t[1].update(labels=torch.tensor([0, 2])), "2 labels but 3 masks"),
    (lambda t: t[0].update(labels=torch.tensor([1, NUM_CLASSES])), r"must lie in \[0, 4\)"),
    (lambda t: t.pop(), "one dict per image"),
])
def test_malformed_targets_are_clear_errors(break_targets, message):
    targets = two_image_targets()
    break_targets(targets)
    outputs = outputs_for(two_image_targets(), QUERIES)
    with pytest.raises(ValueError, match=message):
        criterion()(outputs, targets)


def test_logits_with_the_wrong_number_of_classes_are_a_clear_error():
    outputs = {"pred_logits": torch.randn(2, 6, NUM_CLASSES + 3), "pred_masks": torch.randn(2, 6, 8, 8)}
    with pytest.raises(ValueError, match="num_classes \\+ 1 = 5"):
        criterion()(outputs, two_image_targets())


def test_unknown_loss_names_are_rejected():
    with pytest.raises(ValueError, match="unknown losses \\['boxes'\\]"):
        SetCriterion(NUM_CLASSES, HungarianMatcher(), {}, 0.1, ["labels", "boxes"], 16, 3.0, 0.75)


@pytest.mark.parametrize("device, dtype", [
    ("cpu", torch.bfloat16),
    pytest.param("cuda", torch.float16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
])
def test_decoder_and_losses_run_under_autocast(device, dtype):
    cfg = tiny_cfg()
    crit = build_criterion(cfg).to(device)
    decoder = MultiScaleMaskedTransformerDecoder(cfg, in_channels=16).to(device)
    feats = [torch.randn(2, 16, s, s, device=device) for s in (2, 4, 8)]
    targets = [{k: v.to(device) for k, v in t.items()} for t in two_image_targets()]
    with torch.autocast(device, dtype=dtype):
        outputs = decoder(feats, torch.randn(2, 8, 16, 16, device=device))
        losses = crit(outputs, targets)
    assert outputs["pred_masks"].dtype == dtype
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert torch.isfinite(decoder.query_feat.weight.grad).all()
