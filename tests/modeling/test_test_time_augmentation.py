"""SemanticSegmentorWithTTA (mask2former_dinat/modeling/test_time_augmentation.py): predictions over
scales and flips, flipped back and averaged at the original size."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.data.transforms import HFlipTransform
from helpers.tiny_maskformer import NUM_CLASSES, random_image, tiny_maskformer, tiny_maskformer_cfg
from torch import nn

from mask2former_dinat.modeling.test_time_augmentation import SemanticSegmentorWithTTA


def _tta_cfg(min_sizes, flip):
    cfg = tiny_maskformer_cfg()
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
    image = random_image(40, 56)
    tta = SemanticSegmentorWithTTA(_tta_cfg([40], flip=True), _ImageAsProbability())
    out = tta([{"image": image, "height": 40, "width": 56}])[0]["sem_seg"]
    # Unflipped and flipped-back predictions are the same map: their mean is that map.
    assert torch.allclose(out, image[None, 0].float() / 255, atol=1e-6)


def test_tta_averages_a_real_model_over_scales_and_flips_at_the_original_size():
    model = tiny_maskformer()
    model.eval()
    tta = SemanticSegmentorWithTTA(_tta_cfg([32, 64], flip=True), model)
    image = random_image(48, 72)
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
        SemanticSegmentorWithTTA(_tta_cfg([32], flip=False), tiny_maskformer(semantic_on=False, instance_on=True))
