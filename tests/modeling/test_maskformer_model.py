"""MaskFormer (mask2former_dinat/modeling/maskformer_model.py): its training and inference paths.
Post-processing is pinned in test_inference.py, test-time augmentation in test_test_time_augmentation.py."""
import pytest
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, Instances
from helpers.tiny_maskformer import NUM_CLASSES, random_image, tiny_maskformer, tiny_maskformer_cfg
from torch import nn

from mask2former_dinat.modeling.maskformer_model import MaskFormer, _to_output_size


def _training_input(h, w, classes):
    instances = Instances((h, w))
    masks = torch.zeros(len(classes), h, w, dtype=torch.bool)
    for i in range(len(classes)):
        masks[i, i * 8 : i * 8 + 16, 4 : w - 4] = True
    instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
    instances.gt_masks = BitMasks(masks)
    return {"image": random_image(h, w), "instances": instances}


# ----------------------------------------------------------------------------- training


def test_training_returns_every_weighted_loss_and_gradients_reach_backbone_and_heads():
    model = tiny_maskformer()
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
    model = MaskFormer(tiny_maskformer_cfg(), criterion=_RecordingCriterion())
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
    model = tiny_maskformer()
    model.train()
    with pytest.raises(ValueError, match="instances"):
        model([{"image": random_image(64, 64)}])


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("mode", ["semantic", "panoptic", "instance"])
def test_inference_outputs_have_the_requested_size(mode):
    model = tiny_maskformer(semantic_on=mode == "semantic", panoptic_on=mode == "panoptic", instance_on=mode == "instance")
    model.eval()
    # An image that needs padding (60x76 -> 64x96), its output asked for at 2x; a second at its own size.
    inputs = [{"image": random_image(60, 76), "height": 120, "width": 152}, {"image": random_image(64, 64)}]
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
    cfg_after = tiny_maskformer_cfg()
    cfg_before = tiny_maskformer_cfg()
    cfg_before.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = True
    after, before = MaskFormer(cfg_after), MaskFormer(cfg_before)
    before.load_state_dict(after.state_dict())
    after.eval(), before.eval()
    x = [{"image": random_image(60, 76), "height": 90, "width": 114}]
    with torch.no_grad():
        a, b = after(x)[0]["sem_seg"], before(x)[0]["sem_seg"]
    assert a.shape == b.shape == (NUM_CLASSES, 90, 114)
    assert not torch.equal(a, b)  # the option changes the order of operations...
    assert (a - b).abs().max() < 0.05  # ...but not the result by much


def test_model_rejects_images_that_are_not_channels_first():
    model = tiny_maskformer()
    model.eval()
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model([{"image": random_image(64, 64).permute(1, 2, 0)}])


def test_panoptic_inference_needs_thing_classes_from_metadata():
    model = MaskFormer(tiny_maskformer_cfg(panoptic_on=True))  # no datasets: no metadata
    model.eval()
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        model([{"image": random_image(64, 64)}])


def test_pixel_normalisation_is_not_part_of_the_state_dict():
    model = tiny_maskformer()
    assert "pixel_mean" not in model.state_dict() and "pixel_std" not in model.state_dict()
    assert "criterion.empty_weight" in model.state_dict()


def test_output_resize_skipped_only_where_detectron2_resize_is_the_identity():
    x = torch.randn(3, 32, 48)
    assert _to_output_size(x, (32, 48), 32, 48) is x
    assert torch.equal(sem_seg_postprocess(x, (32, 48), 32, 48), x)
    assert torch.equal(_to_output_size(x, (30, 40), 30, 40), x[:, :30, :40])
    assert _to_output_size(x, (30, 40), 60, 80).shape == (3, 60, 80)
