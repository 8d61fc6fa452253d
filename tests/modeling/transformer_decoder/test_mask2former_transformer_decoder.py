"""MultiScaleMaskedTransformerDecoder: output layout, published parameter names, masked attention."""

import pytest
import torch
from helpers.configs import COCO_PANOPTIC, published_config, published_shapes, published_subset, tiny_head_opts
from torch import nn

from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling.transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
    build_transformer_decoder,
)
from mask2former_dinat.modeling.transformer_decoder.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)

PREFIX = "sem_seg_head.predictor."


def tiny_decoder(**overrides):
    kwargs = dict(in_channels=16, num_classes=3, hidden_dim=16, num_queries=5, nheads=2, dim_feedforward=32,
                  dec_layers=3, pre_norm=False, mask_dim=8, enforce_input_project=False)
    kwargs.update(overrides)
    return MultiScaleMaskedTransformerDecoder(**kwargs).eval()


def tiny_inputs(batch=2, channels=16, mask_dim=8):
    """Three levels (2x2, 4x4, 8x8: lowest resolution first) and 16x16 mask features."""
    feats = [torch.randn(batch, channels, s, s) for s in (2, 4, 8)]
    return feats, torch.randn(batch, mask_dim, 16, 16)


def published_cfg(config_path, opts=None):
    """get_cfg() with the published config's MASK_FORMER / SEM_SEG_HEAD values (and opts)."""
    return published_subset(config_path, ["MODEL.MASK_FORMER.", "MODEL.SEM_SEG_HEAD."], opts=opts or {})


def test_outputs_have_one_prediction_per_layer_plus_the_initial_one():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 8
    cfg.merge_from_list(tiny_head_opts(hidden_dim=16, queries=6, nheads=4, dim_feedforward=32, dec_layers=5))
    mf = cfg.MODEL.MASK_FORMER
    decoder = build_transformer_decoder(cfg, in_channels=16)
    assert len(decoder.transformer_cross_attention_layers) == 4

    feats, mask_features = tiny_inputs()
    out = decoder(feats, mask_features)
    assert out["pred_logits"].shape == (2, 6, 5)
    assert out["pred_masks"].shape == (2, 6, 16, 16)
    assert len(out["aux_outputs"]) == mf.DEC_LAYERS - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 6, 5) and aux["pred_masks"].shape == (2, 6, 16, 16)
    # The initial prediction comes from the learned queries alone, the same for every image.
    first = out["aux_outputs"][0]["pred_logits"]
    torch.testing.assert_close(first[0], first[1])


@pytest.mark.parametrize("config_path", [
    COCO_PANOPTIC,
    published_config("ade20k", "semantic"),
    published_config("cityscapes", "instance"),
])
def test_published_configs_build_exactly_the_published_predictor_parameters(reference_dir, config_path):
    cfg = published_cfg(config_path)
    manifest = published_shapes(config_path)
    expected = {k[len(PREFIX):]: v for k, v in manifest.items() if k.startswith(PREFIX)}
    with torch.device("meta"):
        decoder = build_transformer_decoder(cfg, in_channels=cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM)
    got = {k: list(v.shape) for k, v in decoder.state_dict().items()}
    assert got == expected
    if config_path == COCO_PANOPTIC:
        assert len(decoder.transformer_self_attention_layers) == 9
        assert got["query_feat.weight"] == [200, 256] and got["class_embed.weight"] == [134, 256]


def test_golden_small_model_predictor_weights_load_strictly(reference_dir):
    golden = torch.load(reference_dir / "golden_panoptic_small.pth", weights_only=True)
    cfg = published_cfg(golden["base_config"], golden["opts"])
    decoder = build_transformer_decoder(cfg, in_channels=cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM)
    state = {k[len(PREFIX):]: v for k, v in golden["model"]["model"].items() if k.startswith(PREFIX)}
    decoder.load_state_dict(state, strict=True)
    torch.testing.assert_close(decoder.query_feat.weight, state["query_feat.weight"])


def test_input_projection_is_a_1x1_conv_only_when_channels_differ_or_enforced():
    assert all(isinstance(p, nn.Identity) for p in tiny_decoder().input_proj)
    for decoder in (tiny_decoder(in_channels=12), tiny_decoder(enforce_input_project=True)):
        names = {k for k in decoder.state_dict() if k.startswith("input_proj")}
        assert names == {f"input_proj.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    feats, mask_features = tiny_inputs(channels=12)
    assert tiny_decoder(in_channels=12)(feats, mask_features)["pred_masks"].shape == (2, 5, 16, 16)


def _left_half_mask_decoder(mask_logit):
    """A decoder whose every prediction gives every query the mask logit `mask_logit` on the
    left half of the 16x16 mask features and -mask_logit on the right half."""
    decoder = tiny_decoder(dec_layers=4)
    last = decoder.mask_embed.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = mask_logit
    feats, mask_features = tiny_inputs()
    mask_features[:, 0] = -1.0
    mask_features[:, 0, :, :8] = 1.0
    return decoder, feats, mask_features


def _perturbed(feats, columns):
    """The features with random changes in the given column half ("left"/"right") of every level."""
    out = []
    for f in feats:
        f = f.clone()
        half = f.shape[-1] // 2
        cols = slice(half, None) if columns == "right" else slice(0, half)
        f[..., cols] += 5 * torch.randn_like(f[..., cols])
        out.append(f)
    return out


def test_queries_ignore_features_outside_their_previous_mask():
    decoder, feats, mask_features = _left_half_mask_decoder(10.0)
    with torch.no_grad():
        ref = decoder(feats, mask_features)
        outside = decoder(_perturbed(feats, "right"), mask_features)
        inside = decoder(_perturbed(feats, "left"), mask_features)
    torch.testing.assert_close(outside["pred_logits"], ref["pred_logits"], atol=1e-5, rtol=0)
    for a, b in zip(outside["aux_outputs"], ref["aux_outputs"]):
        torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=1e-5, rtol=0)
    assert (inside["pred_logits"] - ref["pred_logits"]).abs().max() > 1e-2


def test_query_with_an_empty_previous_mask_attends_everywhere():
    decoder, feats, mask_features = _left_half_mask_decoder(-10.0)
    # The mask is now the right half; make it empty everywhere.
    mask_features[:, 0] = 1.0
    with torch.no_grad():
        ref = decoder(feats, mask_features)
        changed = decoder(_perturbed(feats, "right"), mask_features)
    assert torch.isfinite(ref["pred_logits"]).all()
    assert (changed["pred_logits"] - ref["pred_logits"]).abs().max() > 1e-2


@pytest.mark.parametrize("dec_layers, unused_levels", [(1, [1, 2]), (2, [2])])
def test_layer_i_attends_to_feature_level_i_mod_3(dec_layers, unused_levels):
    decoder = tiny_decoder(dec_layers=dec_layers)
    feats, mask_features = tiny_inputs()
    with torch.no_grad():
        ref = decoder(feats, mask_features)["pred_logits"]
        for level in range(3):
            changed = list(feats)
            changed[level] = torch.randn_like(feats[level])
            out = decoder(changed, mask_features)["pred_logits"]
            if level in unused_levels:
                torch.testing.assert_close(out, ref)
            else:
                assert (out - ref).abs().max() > 1e-3


@pytest.mark.parametrize("pre_norm", [False, True])
def test_layers_are_residual_blocks_with_post_or_pre_norm(pre_norm):
    tgt, memory = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    query_pos, pos = torch.randn(5, 2, 16), torch.randn(7, 2, 16)

    def residual(x, sublayer, norm):
        return x + sublayer(norm(x)) if pre_norm else norm(x + sublayer(x))

    self_attn = SelfAttentionLayer(16, 2, normalize_before=pre_norm)
    expected = residual(tgt, lambda x: self_attn.self_attn(x + query_pos, x + query_pos, x)[0], self_attn.norm)
    torch.testing.assert_close(self_attn(tgt, query_pos=query_pos), expected)

    cross = CrossAttentionLayer(16, 2, normalize_before=pre_norm)
    expected = residual(tgt, lambda x: cross.multihead_attn(x + query_pos, memory + pos, memory)[0], cross.norm)
    torch.testing.assert_close(cross(tgt, memory, pos=pos, query_pos=query_pos), expected)

    ffn = FFNLayer(16, 32, normalize_before=pre_norm)
    expected = residual(tgt, lambda x: ffn.linear2(torch.relu(ffn.linear1(x))), ffn.norm)
    torch.testing.assert_close(ffn(tgt), expected)


def test_mlp_has_relu_between_layers_but_not_after_the_last():
    mlp = MLP(4, 8, 3, num_layers=3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(8, 4), (8, 8), (3, 8)]
    x = torch.randn(10, 4)
    h = torch.relu(mlp.layers[1](torch.relu(mlp.layers[0](x))))
    torch.testing.assert_close(mlp(x), mlp.layers[2](h))
    assert (mlp(x) < 0).any()


def test_unknown_decoder_name_is_a_clear_error():
    cfg = get_cfg()
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "NoSuchDecoder"
    with pytest.raises(ValueError, match="NoSuchDecoder.*MultiScaleMaskedTransformerDecoder"):
        build_transformer_decoder(cfg, in_channels=256)


def test_zero_dec_layers_is_a_clear_error():
    cfg = get_cfg()
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 0
    with pytest.raises(ValueError, match="DEC_LAYERS must be >= 1"):
        build_transformer_decoder(cfg, in_channels=256)


def test_bad_inputs_are_clear_errors():
    decoder = tiny_decoder()
    feats, mask_features = tiny_inputs()
    with pytest.raises(ValueError, match="list of 3 feature maps"):
        decoder(feats[:2], mask_features)
    with pytest.raises(ValueError, match="feature level 1"):
        decoder([feats[0], feats[1][:, :8], feats[2]], mask_features)
    with pytest.raises(ValueError, match="mask_features must be"):
        decoder(feats, mask_features[:, :4])
    with pytest.raises(ValueError, match="mask=None"):
        decoder(feats, mask_features, mask=torch.zeros(2, 64, 64, dtype=torch.bool))
