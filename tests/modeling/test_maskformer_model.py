"""MaskFormer's training and inference paths, its post-processing and test-time augmentation."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.data.catalog import Metadata
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Instances
from torch import nn

import mask2former_dinat  # noqa: F401  (registers the components)
from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling.inference import (
    instance_inference,
    masks_to_boxes,
    panoptic_inference,
    semantic_inference,
)
from mask2former_dinat.modeling.maskformer_model import MaskFormer, _to_output_size
from mask2former_dinat.modeling.test_time_augmentation import SemanticSegmentorWithTTA

NUM_CLASSES = 5
THING_IDS = (0, 1, 2)
BIG = 20.0  # a logit that makes its softmax ~1


def tiny_cfg(semantic_on=True, panoptic_on=False, instance_on=False):
    """The published COCO panoptic config shrunk to a model that runs in well under a second."""
    cfg = get_cfg()
    cfg.merge_from_file("configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml")
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", (), "DATASETS.TEST", (),
        "MODEL.DINAT.EMBED_DIM", 16, "MODEL.DINAT.DEPTHS", [1, 1, 1, 1], "MODEL.DINAT.NUM_HEADS", [1, 2, 2, 4],
        "MODEL.DINAT.KERNEL_SIZE", 3, "MODEL.DINAT.DILATIONS", [[2], [1], [1], [1]],
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.MASK_DIM", 32,
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1,
        "MODEL.MASK_FORMER.HIDDEN_DIM", 32, "MODEL.MASK_FORMER.NHEADS", 2, "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 8, "MODEL.MASK_FORMER.DEC_LAYERS", 3,
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 64,
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", semantic_on,
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", panoptic_on,
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", instance_on,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.0,
        "TEST.DETECTIONS_PER_IMAGE", 10,
    ])
    return cfg


def tiny_model(**test_flags):
    return MaskFormer(tiny_cfg(**test_flags), metadata=Metadata(thing_dataset_id_to_contiguous_id={i + 1: i for i in THING_IDS}))


def _image(h, w):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8)


def _training_input(h, w, classes):
    instances = Instances((h, w))
    masks = torch.zeros(len(classes), h, w, dtype=torch.bool)
    for i in range(len(classes)):
        masks[i, i * 8 : i * 8 + 16, 4 : w - 4] = True
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = BitMasks(masks)
    return {"image": _image(h, w), "instances": instances}


# ----------------------------------------------------------------------------- training


def test_training_returns_every_weighted_loss_and_gradients_reach_backbone_and_heads():
    model = tiny_model()
    model.train()
    losses = model([_training_input(64, 64, [0, 3]), _training_input(48, 80, [4])])
    assert set(losses) == set(model.criterion.weight_dict)
    # 3 losses for the final prediction and for each of the DEC_LAYERS - 1 auxiliary ones.
    assert len(losses) == 3 * 3
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for part in (model.backbone, model.sem_seg_head.pixel_decoder, model.sem_seg_head.predictor):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads[:3]), type(part).__name__
        assert any(g.abs().sum() > 0 for g in grads if g is not None), type(part).__name__


class _RecordingCriterion(nn.Module):
    """Stands in for SetCriterion: fixed losses, remembers the targets it was given."""

    weight_dict = {"loss_ce": 2.0, "loss_mask": 5.0}

    def forward(self, outputs, targets):
        self.targets = targets
        one = outputs["pred_logits"].sum() * 0 + 1
        return {"loss_ce": one, "loss_mask": 2 * one, "loss_unweighted": 7 * one}


def test_training_weights_losses_drops_unweighted_ones_and_pads_bitmask_or_tensor_targets():
    model = MaskFormer(tiny_cfg(), criterion=_RecordingCriterion())
    model.train()
    inputs = [_training_input(64, 64, [0, 3]), _training_input(40, 70, [4])]
    inputs[1]["instances"].gt_masks = inputs[1]["instances"].gt_masks.tensor  # mappers give plain bool tensors
    losses = model(inputs)
    assert {k: v.item() for k, v in losses.items()} == {"loss_ce": 2.0, "loss_mask": 10.0}
    targets = model.criterion.targets
    for target, x in zip(targets, inputs):
        # 70 pads to 96 (SIZE_DIVISIBILITY 32); masks padded like the images, with zeros.
        assert target["masks"].shape[-2:] == (64, 96)
        h, w = x["image"].shape[-2:]
        gt_masks = x["instances"].gt_masks
        assert torch.equal(target["masks"][:, :h, :w], getattr(gt_masks, "tensor", gt_masks))
        assert not target["masks"][:, h:, :].any() and not target["masks"][:, :, w:].any()
        assert torch.equal(target["labels"], x["instances"].gt_classes)


def test_training_without_instances_says_what_is_missing():
    model = tiny_model()
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": _image(64, 64)}])


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("mode", ["semantic", "panoptic", "instance"])
def test_inference_outputs_have_the_requested_size(mode):
    model = tiny_model(semantic_on=mode == "semantic", panoptic_on=mode == "panoptic", instance_on=mode == "instance")
    model.eval()
    # An image that needs padding (60x76 -> 64x96), its output asked for at 2x; a second at its own size.
    inputs = [{"image": _image(60, 76), "height": 120, "width": 152}, {"image": _image(64, 64)}]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, size in zip(outputs, [(120, 152), (64, 64)]):
        assert set(out) == {{"semantic": "sem_seg", "panoptic": "panoptic_seg", "instance": "instances"}[mode]}
        if mode == "semantic":
            assert out["sem_seg"].shape == (NUM_CLASSES, *size)
            assert (out["sem_seg"] >= 0).all() and (out["sem_seg"] <= 8).all()  # at most 1 per query
        elif mode == "panoptic":
            seg, segments_info = out["panoptic_seg"]
            assert seg.shape == size and seg.dtype == torch.int32
            assert set(seg.unique().tolist()) - {0} == {s["id"] for s in segments_info}
        else:
            instances = out["instances"]
            assert instances.image_size == size and instances.pred_masks.shape[-2:] == size
            assert len(instances) == 10  # TEST.DETECTIONS_PER_IMAGE, all classes (no panoptic filter)


def test_semantic_postprocessing_before_or_after_inference_agree_closely():
    cfg_after = tiny_cfg()
    cfg_before = tiny_cfg()
    cfg_before.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = True
    after, before = MaskFormer(cfg_after), MaskFormer(cfg_before)
    before.load_state_dict(after.state_dict())
    after.eval(), before.eval()
    x = [{"image": _image(60, 76), "height": 90, "width": 114}]
    with torch.no_grad():
        a, b = after(x)[0]["sem_seg"], before(x)[0]["sem_seg"]
    assert a.shape == b.shape == (NUM_CLASSES, 90, 114)
    assert not torch.equal(a, b)  # the option changes the order of operations...
    assert (a - b).abs().max() < 0.05  # ...but not the result by much


def test_model_rejects_images_that_are_not_channels_first():
    model = tiny_model()
    model.eval()
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model([{"image": _image(64, 64).permute(1, 2, 0)}])


def test_panoptic_inference_needs_thing_classes_from_metadata():
    model = MaskFormer(tiny_cfg(panoptic_on=True))  # no datasets: no metadata
    model.eval()
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        model([{"image": _image(64, 64)}])


def test_pixel_normalisation_is_not_part_of_the_state_dict():
    model = tiny_model()
    assert "pixel_mean" not in model.state_dict() and "pixel_std" not in model.state_dict()
    assert "criterion.empty_weight" in model.state_dict()


def test_output_resize_skipped_only_where_detectron2_resize_is_the_identity():
    x = torch.randn(3, 32, 48)
    assert _to_output_size(x, (32, 48), 32, 48) is x
    assert torch.equal(sem_seg_postprocess(x, (32, 48), 32, 48), x)
    assert torch.equal(_to_output_size(x, (30, 40), 30, 40), x[:, :30, :40])
    assert _to_output_size(x, (30, 40), 60, 80).shape == (3, 60, 80)


# ----------------------------------------------------------------------------- post-processing


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


# ----------------------------------------------------------------------------- test-time augmentation


def _tta_cfg(min_sizes, flip):
    cfg = tiny_cfg()
    cfg.TEST.AUG.MIN_SIZES = min_sizes
    cfg.TEST.AUG.MAX_SIZE = 200
    cfg.TEST.AUG.FLIP = flip
    return cfg


class _ImageAsProbability(nn.Module):
    """A "segmenter" whose one-class sem_seg is the image's first channel / 255, resized
    to the requested height/width: a prediction that flips with the image."""

    semantic_on = True

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            prob = x["image"][None, :1].float() / 255
            prob = F.interpolate(prob, size=(x["height"], x["width"]), mode="bilinear", align_corners=False)[0]
            outputs.append({"sem_seg": prob})
        return outputs


def test_tta_flips_flipped_predictions_back_before_averaging():
    image = _image(40, 56)
    tta = SemanticSegmentorWithTTA(_tta_cfg([40], flip=True), _ImageAsProbability())
    out = tta([{"image": image, "height": 40, "width": 56}])[0]["sem_seg"]
    # Unflipped and flipped-back predictions are the same map: their mean is that map.
    assert torch.allclose(out, image[None, 0].float() / 255, atol=1e-6)


def test_tta_averages_a_real_model_over_scales_and_flips_at_the_original_size():
    model = tiny_model()
    model.eval()
    tta = SemanticSegmentorWithTTA(_tta_cfg([32, 64], flip=True), model)
    image = _image(48, 72)
    out = tta([{"image": image, "height": 48, "width": 72}])[0]["sem_seg"]
    assert out.shape == (NUM_CLASSES, 48, 72)
    augmented = tta.tta_mapper({"image": image, "height": 48, "width": 72})
    assert sorted(tuple(x["image"].shape[-2:]) for x in augmented) == [(32, 48), (32, 48), (64, 96), (64, 96)]
    preds = []
    with torch.no_grad():
        for x in augmented:
            flipped = any(isinstance(t, HFlipTransform) for t in x.pop("transforms").transforms)
            pred = model([x])[0]["sem_seg"]
            preds.append(pred.flip(2) if flipped else pred)
    assert torch.allclose(out, torch.stack(preds).mean(0), atol=1e-6)
    assert not torch.allclose(out, preds[0], atol=1e-3)


def test_tta_needs_a_semantic_model():
    with pytest.raises(ValueError, match="SEMANTIC_ON"):
        SemanticSegmentorWithTTA(_tta_cfg([32], flip=False), tiny_model(semantic_on=False, instance_on=True))
