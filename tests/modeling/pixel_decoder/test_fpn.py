"""BasePixelDecoder (the light FPN) and the pixel-decoder registry's builder."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torch import nn

from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling.pixel_decoder import PIXEL_DECODER_REGISTRY, BasePixelDecoder, build_pixel_decoder

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
CHANNELS = (32, 64, 128, 256)


def fpn_cfg(norm="GN"):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64,
        "MODEL.SEM_SEG_HEAD.MASK_DIM", 32,
        "MODEL.SEM_SEG_HEAD.NORM", norm,
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", list(STRIDES),
    ])
    return cfg


def input_shape():
    return {k: ShapeSpec(channels=c, stride=s) for (k, s), c in zip(STRIDES.items(), CHANNELS)}


def features(size=(24, 40), batch=2):
    h, w = size
    feats = {}
    for name, c in zip(STRIDES, CHANNELS):
        feats[name] = torch.randn(batch, c, h, w)
        h, w = -(-h // 2), -(-w // 2)
    return feats


def test_output_layouts_and_three_coarsest_levels():
    decoder = build_pixel_decoder(fpn_cfg(), input_shape()).eval()
    assert isinstance(decoder, BasePixelDecoder)
    feats = features()
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = decoder.forward_features(feats)
    assert encoder_features is None
    assert mask_features.shape == (2, 32, 24, 40)
    assert [tuple(m.shape[-2:]) for m in multi_scale] == [(3, 5), (6, 10), (12, 20)]
    assert all(m.shape[:2] == (2, 64) for m in multi_scale)


def test_module_names_follow_mask2former_and_norm_decides_the_bias():
    decoder = BasePixelDecoder(fpn_cfg("GN"), input_shape())
    names = {n for n, _ in decoder.named_children()}
    assert names == {"adapter_1", "adapter_2", "adapter_3", "layer_1", "layer_2", "layer_3", "layer_4", "mask_features"}
    assert decoder.layer_4.weight.shape == (64, 256, 3, 3)  # the coarsest level has no lateral conv
    assert decoder.adapter_1.bias is None and isinstance(decoder.adapter_1.norm, nn.GroupNorm)
    plain = BasePixelDecoder(fpn_cfg(""), input_shape())
    assert plain.adapter_1.bias is not None and plain.adapter_1.norm is None
    assert plain.mask_features.weight.shape == (32, 64, 3, 3)


def test_top_down_path_adds_nearest_upsampled_coarser_output():
    decoder = build_pixel_decoder(fpn_cfg(), input_shape()).eval()
    feats = features(size=(25, 39), batch=1)  # odd sizes: upsampling goes to the lateral's size
    with torch.no_grad():
        mask_features, _, multi_scale = decoder.forward_features(feats)
        torch.testing.assert_close(multi_scale[0], decoder.layer_4(feats["res5"]))
        lateral = decoder.adapter_3(feats["res4"])
        expected = decoder.layer_3(lateral + F.interpolate(multi_scale[0], size=lateral.shape[-2:], mode="nearest"))
        torch.testing.assert_close(multi_scale[1], expected)
    assert mask_features.shape[-2:] == (25, 39)


def test_unknown_decoder_name_is_a_clear_error():
    cfg = fpn_cfg()
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "NoSuchDecoder"
    with pytest.raises(ValueError, match="NoSuchDecoder.*MSDeformAttnPixelDecoder"):
        build_pixel_decoder(cfg, input_shape())


def test_registered_module_without_forward_features_is_rejected():
    @PIXEL_DECODER_REGISTRY.register()
    class _DecoderWithoutForwardFeatures(nn.Module):
        def __init__(self, cfg, input_shape):
            super().__init__()

    try:
        cfg = fpn_cfg()
        cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "_DecoderWithoutForwardFeatures"
        with pytest.raises(ValueError, match="forward_features"):
            build_pixel_decoder(cfg, input_shape())
    finally:
        del PIXEL_DECODER_REGISTRY._obj_map["_DecoderWithoutForwardFeatures"]
