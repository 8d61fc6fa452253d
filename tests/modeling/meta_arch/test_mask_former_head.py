"""MaskFormerHead hands the predictor the features TRANSFORMER_IN_FEATURE names, with matching channels."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head
from torch import nn

import mask2former_dinat  # noqa: F401  (registers the components)
from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling.meta_arch import mask_former_head

BACKBONE_SHAPES = {
    "res2": ShapeSpec(channels=16, stride=4),
    "res3": ShapeSpec(channels=32, stride=8),
    "res4": ShapeSpec(channels=64, stride=16),
    "res5": ShapeSpec(channels=128, stride=32),
}


class _StubPixelDecoder(nn.Module):
    """Returns distinguishable stand-ins for its three outputs."""

    def forward_features(self, features):
        self.features = features
        return torch.full((1, 8, 4, 4), 1.0), torch.full((1, 24, 1, 1), 2.0), [torch.full((1, 24, 1, 1), 3.0)] * 3


class _StubPredictor(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.in_channels = in_channels

    def forward(self, x, mask_features, mask=None):
        self.x, self.mask_features = x, mask_features
        return {"pred_logits": torch.zeros(1, 2, 3), "pred_masks": mask_features[:, :2]}


@pytest.fixture
def stub_builders(monkeypatch):
    monkeypatch.setattr(mask_former_head, "build_pixel_decoder", lambda cfg, shapes: _StubPixelDecoder())
    monkeypatch.setattr(
        mask_former_head, "build_transformer_decoder", lambda cfg, in_channels, mask_classification: _StubPredictor(in_channels)
    )


def _cfg(in_feature):
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res5", "res3", "res2", "res4"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 24
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 8
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = in_feature
    return cfg


@pytest.mark.parametrize(
    "in_feature, channels, expected_value",
    [("multi_scale_pixel_decoder", 24, "multi_scale"), ("transformer_encoder", 24, 2.0), ("pixel_embedding", 8, 1.0), ("res4", 64, "res4")],
)
def test_predictor_reads_the_features_named_by_transformer_in_feature(stub_builders, in_feature, channels, expected_value):
    head = build_sem_seg_head(_cfg(in_feature), BACKBONE_SHAPES)
    assert isinstance(head, mask_former_head.MaskFormerHead)
    assert head.predictor.in_channels == channels
    features = {name: torch.randn(1, s.channels, 64 // s.stride, 64 // s.stride) for name, s in BACKBONE_SHAPES.items()}
    out = head(features)
    assert head.pixel_decoder.features is features
    assert torch.equal(out["pred_masks"], head.predictor.mask_features[:, :2])
    if expected_value == "multi_scale":
        assert isinstance(head.predictor.x, list) and len(head.predictor.x) == 3
    elif expected_value == "res4":
        assert head.predictor.x is features["res4"]
    else:
        assert (head.predictor.x == expected_value).all()


def test_in_features_are_ordered_by_stride(stub_builders):
    head = build_sem_seg_head(_cfg("multi_scale_pixel_decoder"), BACKBONE_SHAPES)
    assert head.in_features == ["res2", "res3", "res4", "res5"]


def test_unknown_transformer_in_feature_is_rejected_by_name(stub_builders):
    with pytest.raises(ValueError, match="TRANSFORMER_IN_FEATURE='res6'"):
        build_sem_seg_head(_cfg("res6"), BACKBONE_SHAPES)


def test_in_features_the_backbone_lacks_are_rejected(stub_builders):
    cfg = _cfg("multi_scale_pixel_decoder")
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "p6"]
    with pytest.raises(ValueError, match=r"\['p6'\]"):
        build_sem_seg_head(cfg, BACKBONE_SHAPES)


def test_head_is_registered_under_its_config_name():
    assert SEM_SEG_HEADS_REGISTRY.get("MaskFormerHead") is mask_former_head.MaskFormerHead
