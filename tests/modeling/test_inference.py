"""The post-processing of mask2former_dinat/modeling/inference.py: semantic, panoptic and instance
inference from one image's class and mask logits, and boxes from masks."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks

from mask2former_dinat.modeling.inference import (
    instance_inference,
    masks_to_boxes,
    panoptic_inference,
    semantic_inference,
)

NUM_CLASSES = 5
THING_IDS = (0, 1, 2)
BIG = 20.0  # a logit that makes its softmax ~1


def _cls_logits(classes, num_classes=NUM_CLASSES):
    """Logits whose softmax is ~1 on the given class per query (num_classes = no object)."""
    logits = torch.zeros(len(classes), num_classes + 1)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = BIG
    return logits


def _mask_logits(regions, h=8, w=8):
    """Mask logits: +BIG inside each (y0, y1, x0, x1) region, -BIG elsewhere."""
    masks = torch.full((len(regions), h, w), -BIG)
    for q, (y0, y1, x0, x1) in enumerate(regions):
        masks[q, y0:y1, x0:x1] = BIG
    return masks


def test_semantic_inference_is_class_probability_times_mask_probability_summed_over_queries():
    mask_cls, mask_pred = torch.randn(4, NUM_CLASSES + 1), torch.randn(4, 6, 7)
    expected = sum(F.softmax(mask_cls[q], -1)[:-1, None, None] * mask_pred[q].sigmoid() for q in range(4))
    assert torch.allclose(semantic_inference(mask_cls, mask_pred), expected, atol=1e-6)


def test_panoptic_inference_merges_stuff_per_class_and_keeps_thing_instances_apart():
    stuff = 4
    mask_cls = _cls_logits([stuff, stuff, 0, 0, NUM_CLASSES])
    mask_pred = _mask_logits([(0, 8, 0, 4), (0, 4, 4, 8), (4, 8, 4, 6), (4, 8, 6, 8), (0, 8, 0, 8)])
    seg, info = panoptic_inference(mask_cls, mask_pred, object_mask_threshold=0.8, overlap_threshold=0.8, thing_ids=THING_IDS)
    expected = torch.zeros(8, 8, dtype=torch.int32)
    expected[:, :4] = 1
    expected[:4, 4:] = 1  # the second stuff query joins the first one's segment
    expected[4:, 4:6] = 2
    expected[4:, 6:] = 3
    assert torch.equal(seg, expected)
    assert info == [
        {"id": 1, "isthing": False, "category_id": stuff},
        {"id": 2, "isthing": True, "category_id": 0},
        {"id": 3, "isthing": True, "category_id": 0},
    ]


def test_panoptic_inference_drops_unconfident_queries_and_mostly_covered_masks():
    mask_cls = _cls_logits([1, 2, 3])
    mask_cls[2] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])  # class 3 with probability ~0.3
    mask_cls[1] = torch.tensor([0.0, 0.0, 3.8067, 0.0, 0.0, 0.0])  # class 2 with probability 0.9
    # Query 0 (score ~1) wins half of query 1's mask (score 0.9).
    mask_pred = _mask_logits([(0, 8, 0, 6), (0, 8, 4, 8), (0, 8, 6, 8)])
    seg, info = panoptic_inference(mask_cls, mask_pred, object_mask_threshold=0.5, overlap_threshold=0.8, thing_ids=THING_IDS)
    assert info == [{"id": 1, "isthing": True, "category_id": 1}]
    assert (seg[:, :6] == 1).all() and (seg[:, 6:] == 0).all()
    # With a lower overlap threshold, query 1 keeps the half of its mask it wins.
    seg, info = panoptic_inference(mask_cls, mask_pred, object_mask_threshold=0.5, overlap_threshold=0.4, thing_ids=THING_IDS)
    assert [s["category_id"] for s in info] == [1, 2]
    assert (seg[:, 6:] == 2).all()


def test_panoptic_inference_with_no_confident_query_is_all_void():
    seg, info = panoptic_inference(
        torch.zeros(3, NUM_CLASSES + 1), torch.randn(3, 5, 5), object_mask_threshold=0.8, overlap_threshold=0.8, thing_ids=THING_IDS
    )
    assert info == [] and seg.shape == (5, 5) and not seg.any()


def _panoptic_reference(mask_cls, mask_pred, object_mask_threshold, overlap_threshold, thing_ids):
    """The published algorithm written out pixel set by pixel set, one query at a time."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep].sigmoid()
    seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32)
    info, stuff, next_id = [], {}, 0
    if len(cur_classes) == 0:
        return seg, info
    ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    for k in range(len(cur_classes)):
        c = cur_classes[k].item()
        mask_area = (ids == k).sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        mask = (ids == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if c not in thing_ids:
                if c in stuff:
                    seg[mask] = stuff[c]
                    continue
                stuff[c] = next_id + 1
            next_id += 1
            seg[mask] = next_id
            info.append({"id": next_id, "isthing": c in thing_ids, "category_id": c})
    return seg, info


@pytest.mark.parametrize("overlap_threshold", [0.0, 0.5, 0.8])
def test_panoptic_inference_equals_the_per_query_algorithm_on_random_outputs(overlap_threshold):
    for _ in range(5):
        mask_cls = torch.randn(12, NUM_CLASSES + 1) * 3
        mask_pred = F.interpolate(torch.randn(1, 12, 5, 6) * 4, size=(20, 24), mode="bilinear")[0]
        ours = panoptic_inference(
            mask_cls, mask_pred, object_mask_threshold=0.3, overlap_threshold=overlap_threshold, thing_ids=THING_IDS
        )
        expected = _panoptic_reference(mask_cls, mask_pred, 0.3, overlap_threshold, THING_IDS)
        assert torch.equal(ours[0], expected[0]) and ours[1] == expected[1]


def test_instance_inference_keeps_the_top_k_query_class_pairs_with_mask_weighted_scores():
    mask_cls = torch.full((3, NUM_CLASSES + 1), -BIG)
    mask_cls[0, 0], mask_cls[0, 3] = 1.0, 1.0  # query 0: half class 0, half class 3
    mask_cls[1, 4] = 2.0  # query 1: class 4 (probability ~1)
    mask_cls[2, NUM_CLASSES] = 2.0  # query 2: no object
    mask_pred = _mask_logits([(0, 4, 0, 8), (2, 8, 1, 5), (0, 8, 0, 8)])
    mask_pred[1, 2:4, 1:5] = 0.5  # half of query 1's mask is less certain
    result = instance_inference(mask_cls, mask_pred, topk=3)
    order = result.scores.argsort(descending=True)
    assert result.pred_classes[order].tolist()[:1] == [4] and sorted(result.pred_classes[order].tolist()[1:]) == [0, 3]
    mean_inside = (torch.sigmoid(torch.tensor(0.5)) * 8 + 16 * torch.sigmoid(torch.tensor(BIG))) / 24
    assert result.scores[order][0].item() == pytest.approx(mean_inside.item(), abs=1e-5)
    assert result.scores[order][1:].tolist() == pytest.approx([0.5, 0.5], abs=1e-5)
    assert result.pred_masks.dtype == torch.bool and result.pred_masks.shape == (3, 8, 8)
    boxes = {c: b for c, b in zip(result.pred_classes.tolist(), result.pred_boxes.tensor.tolist())}
    assert boxes[4] == [1.0, 2.0, 5.0, 8.0] and boxes[0] == [0.0, 0.0, 8.0, 4.0]
    # Panoptic models keep thing classes only: class 3 and 4 are stuff here.
    things = instance_inference(mask_cls, mask_pred, topk=3, thing_ids=(0, 1, 2))
    assert things.pred_classes.tolist() == [0]


def test_instance_inference_caps_top_k_at_queries_times_classes():
    result = instance_inference(torch.randn(2, NUM_CLASSES + 1), torch.randn(2, 4, 4), topk=100)
    assert len(result) == 2 * NUM_CLASSES


def test_boxes_from_masks_equal_detectron2_bitmask_boxes_including_empty_masks():
    masks = torch.rand(6, 13, 17) > 0.9
    masks[2] = False
    masks[3] = False
    masks[3, 12, 16] = True
    expected = BitMasks(masks).get_bounding_boxes().tensor
    assert torch.equal(masks_to_boxes(masks), expected)
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_post_processing_rejects_batched_outputs():
    with pytest.raises(ValueError, match="one image"):
        semantic_inference(torch.randn(1, 4, 6), torch.randn(1, 4, 5, 5))
