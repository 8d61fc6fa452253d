"""MSDeformAttnPixelDecoder: built from the published configs, its parameter names/shapes,
output layouts, and the encoder's and FPN's semantics."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from helpers.configs import COCO_PANOPTIC, published_shapes, published_subset

from mask2former_dinat.modeling.pixel_decoder import MSDeformAttnPixelDecoder, build_pixel_decoder
from mask2former_dinat.modeling.pixel_decoder.msdeformattn import (
    MSDeformAttnTransformerEncoder,
    MSDeformAttnTransformerEncoderOnly,
)

PREFIX = "sem_seg_head.pixel_decoder."
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def published_cfg(opts=()):
    """get_cfg() with the published COCO panoptic head values (MODEL.SEM_SEG_HEAD.*, MODEL.MASK_FORMER.*), then opts."""
    return published_subset(COCO_PANOPTIC, ["MODEL.SEM_SEG_HEAD.", "MODEL.MASK_FORMER."], opts=opts)


def shapes(channels):
    return {name: ShapeSpec(channels=c, stride=STRIDES[name]) for name, c in zip(STRIDES, channels)}


def features(channels, size, batch=2):
    """Backbone-like features for an image of `size` (H, W): res2 at ceil(1/4), then ceil-halved per stage."""
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    feats = {}
    for name, c in zip(STRIDES, channels):
        feats[name] = torch.randn(batch, c, h, w)
        h, w = -(-h // 2), -(-w // 2)
    return feats


SMALL = ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 64, "MODEL.SEM_SEG_HEAD.MASK_DIM", 64,
         "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 2, "MODEL.MASK_FORMER.NHEADS", 4]
GOLDEN_CHANNELS = (32, 64, 128, 256)


@pytest.fixture
def small_decoder(reference_dir):
    cfg = published_cfg(SMALL)
    return build_pixel_decoder(cfg, shapes(GOLDEN_CHANNELS)).eval()


@pytest.mark.parametrize("size", [(96, 160), (100, 132)])
def test_small_decoder_output_layouts_on_non_square_inputs(small_decoder, size):
    feats = features(GOLDEN_CHANNELS, size)
    with torch.no_grad():
        mask_features, encoder_features, multi_scale = small_decoder.forward_features(feats)
    hw = {k: tuple(v.shape[-2:]) for k, v in feats.items()}
    assert mask_features.shape == (2, 64) + hw["res2"]
    assert encoder_features.shape == (2, 64) + hw["res5"]
    assert [tuple(m.shape) for m in multi_scale] == [(2, 64) + hw[k] for k in ("res5", "res4", "res3")]
    assert torch.equal(multi_scale[0], encoder_features)
    assert all(torch.isfinite(t).all() for t in [mask_features, *multi_scale])


def test_golden_model_weights_load_strictly_with_encoder_heads_from_mask_former_nheads(reference_dir):
    """The golden small model sets MODEL.MASK_FORMER.NHEADS=4 and its encoder has 4 heads (96 = 4*3*4*2 offsets)."""
    golden = torch.load(reference_dir / "golden_panoptic_small.pth", weights_only=True)
    assert golden["opts"]["MODEL.MASK_FORMER.NHEADS"] == 4
    cfg = published_cfg([x for kv in golden["opts"].items() for x in kv])
    decoder = build_pixel_decoder(cfg, shapes(GOLDEN_CHANNELS))
    expected = {k[len(PREFIX):]: v for k, v in golden["model"]["model"].items() if k.startswith(PREFIX)}
    got = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert got == {k: tuple(v.shape) for k, v in expected.items()}
    decoder.load_state_dict(expected, strict=True)
    assert decoder.transformer.encoder.layers[0].self_attn.n_heads == 4


def test_meta_build_of_the_published_config_has_the_manifest_parameters(reference_dir):
    manifest = published_shapes(COCO_PANOPTIC)
    expected = {k[len(PREFIX):]: tuple(v) for k, v in manifest.items() if k.startswith(PREFIX)}
    cfg = published_cfg()
    with torch.device("meta"):
        decoder = build_pixel_decoder(cfg, shapes((192, 384, 768, 1536)))
    assert isinstance(decoder, MSDeformAttnPixelDecoder)
    got = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    assert got == expected
    layers = decoder.transformer.encoder.layers
    assert len(layers) == 6 and layers[0].linear1.out_features == 1024 and layers[0].self_attn.n_heads == 8


def test_without_encoder_layers_the_fpn_step_adds_bilinear_upsampled_coarser_output(reference_dir):
    cfg = published_cfg(SMALL[:4] + ["MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 0])
    decoder = build_pixel_decoder(cfg, shapes(GOLDEN_CHANNELS)).eval()
    feats = features(GOLDEN_CHANNELS, (72, 104))
    with torch.no_grad():
        mask_features, _, multi_scale = decoder.forward_features(feats)
        # with no encoder layer the encoder is the identity on the projected levels (res5 first)
        for proj, name, got in zip(decoder.input_proj, ("res5", "res4", "res3"), multi_scale):
            torch.testing.assert_close(got, proj(feats[name]))
        lateral = decoder.adapter_1(feats["res2"])
        res2 = decoder.layer_1(lateral + F.interpolate(multi_scale[-1], size=lateral.shape[-2:], mode="bilinear",
                                                       align_corners=False))
        torch.testing.assert_close(mask_features, decoder.mask_features(res2))


def test_encoder_reference_points_are_pixel_centres_scaled_by_valid_ratios():
    spatial = [(2, 3), (1, 2)]
    ones = torch.ones(1, 2, 2)
    ref = MSDeformAttnTransformerEncoder.get_reference_points(spatial, ones, device="cpu")
    assert ref.shape == (1, 8, 2, 2)
    torch.testing.assert_close(ref[0, 4, 0], torch.tensor([1.5 / 3, 1.5 / 2]))  # level 0, row 1, column 1
    torch.testing.assert_close(ref[0, 7, 1], torch.tensor([1.5 / 2, 0.5 / 1]))  # level 1, column 1
    ratios = torch.tensor([[[0.5, 1.0], [1.0, 0.5]]])  # (w, h) valid fractions per level
    ref = MSDeformAttnTransformerEncoder.get_reference_points(spatial, ratios, device="cpu")
    # x of level-0 pixel column 0: 0.5 / (0.5 * 3) of the valid width, re-scaled into each level
    torch.testing.assert_close(ref[0, 0, :, 0], torch.tensor([0.5 / 1.5 * 0.5, 0.5 / 1.5 * 1.0]))
    torch.testing.assert_close(ref[0, 0, :, 1], torch.tensor([0.5 / 2 * 1.0, 0.5 / 2 * 0.5]))


def test_valid_ratio_counts_unpadded_rows_and_columns():
    mask = torch.zeros(1, 4, 5, dtype=torch.bool)
    mask[:, 3:, :] = True
    mask[:, :, 2:] = True
    torch.testing.assert_close(MSDeformAttnTransformerEncoderOnly.get_valid_ratio(mask), torch.tensor([[0.4, 0.75]]))


def test_encoder_query_carries_position_plus_level_embedding_and_value_is_the_source():
    enc = MSDeformAttnTransformerEncoderOnly(d_model=32, nhead=4, num_encoder_layers=1, dim_feedforward=64,
                                             dropout=0.0, num_feature_levels=2, enc_n_points=2).eval()
    srcs = [torch.randn(1, 32, 3, 4), torch.randn(1, 32, 2, 2)]
    pos = [torch.randn(1, 32, 3, 4), torch.randn(1, 32, 2, 2)]
    seen = {}
    attn = enc.encoder.layers[0].self_attn
    handle = attn.register_forward_pre_hook(lambda m, args: seen.update(query=args[0], value_in=args[2]))
    with torch.no_grad():
        memory, spatial_shapes, level_start_index = enc(srcs, pos)
    handle.remove()
    flat = lambda xs: torch.cat([x.flatten(2).transpose(1, 2) for x in xs], 1)  # noqa: E731
    level_embed = torch.cat([enc.level_embed[0].expand(12, 32), enc.level_embed[1].expand(4, 32)])[None]
    torch.testing.assert_close(seen["value_in"], flat(srcs))
    torch.testing.assert_close(seen["query"], flat(srcs) + flat(pos) + level_embed)
    assert spatial_shapes.tolist() == [[3, 4], [2, 2]] and level_start_index.tolist() == [0, 12]
    # post-norm layer: norm1 after the attention residual, norm2 after the FFN residual
    layer = enc.encoder.layers[0]
    with torch.no_grad():
        ref_points = MSDeformAttnTransformerEncoder.get_reference_points([(3, 4), (2, 2)], torch.ones(1, 2, 2), "cpu")
        x = layer.norm1(flat(srcs) + attn(seen["query"], ref_points, flat(srcs), spatial_shapes, level_start_index))
        expected = layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))
    torch.testing.assert_close(memory, expected)


def test_half_precision_features_are_decoded_in_float32(small_decoder):
    feats = {k: v.half() for k, v in features(GOLDEN_CHANNELS, (64, 64), batch=1).items()}
    with torch.no_grad():
        mask_features, _, multi_scale = small_decoder.forward_features(feats)
    assert mask_features.dtype == torch.float32 and all(m.dtype == torch.float32 for m in multi_scale)


def test_missing_features_and_bad_encoder_in_features_are_clear_errors(reference_dir, small_decoder):
    feats = features(GOLDEN_CHANNELS, (64, 64), batch=1)
    del feats["res2"]
    with pytest.raises(KeyError, match="res2"):
        small_decoder.forward_features(feats)
    cfg = published_cfg(SMALL + ["MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res3", "res4"]])
    with pytest.raises(ValueError, match="res5"):
        build_pixel_decoder(cfg, shapes(GOLDEN_CHANNELS))
    cfg = published_cfg(SMALL + ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 48])
    with pytest.raises(ValueError, match="multiple of 32"):
        build_pixel_decoder(cfg, shapes(GOLDEN_CHANNELS))
