"""D2DiNAT: feature shapes, published parameter names, parity with the original code, freezing,
activation checkpointing, layer scale and config validation (errors named by MODEL.DINAT key)."""
import math

import pytest
import torch
from detectron2.modeling import build_backbone
from detectron2.structures import ImageList
from helpers.configs import published_shapes, published_subset, tiny_backbone_opts
from helpers.golden import STAGE_TOL, load_golden

from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling.backbone import dinat as dinat_module
from mask2former_dinat.modeling.backbone.d2_dinat import CONFIG_KEYS, D2DiNAT
from mask2former_dinat.modeling.backbone.dinat import DiNAT



def small_cfg(**dinat):
    """A tiny DiNAT (kernel 5, dilation 4 at level 0) with MODEL.DINAT overrides."""
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
    cfg.merge_from_list(tiny_backbone_opts(
        depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), kernel_size=5, dilations=((4,), (2,), (1, 2), (1,)), MLP_RATIO=2.0
    ))
    for key, value in dinat.items():
        setattr(cfg.MODEL.DINAT, key, value)
    return cfg


def published_cfg(config_path, opts=None):
    """get_cfg() with the backbone keys of a published config (published_configs.json), then `opts`."""
    return published_subset(config_path, ["MODEL.DINAT."], ["MODEL.BACKBONE.NAME", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"], opts or {})


@pytest.mark.parametrize("height, width", [(100, 70), (64, 96), (24, 40)])
def test_features_have_advertised_channels_strides_and_sizes(height, width):
    # 64x96 and 24x40 give res2 maps smaller than kernel*dilation = 20 at level 0 (zero-pad-then-crop path).
    model = build_backbone(small_cfg()).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    shapes = model.output_shape()
    assert list(out) == ["res2", "res3", "res4", "res5"] == list(shapes)
    for name, feat in out.items():
        stride = shapes[name].stride
        assert stride == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}[name]
        expected = (2, shapes[name].channels, math.ceil(height / stride), math.ceil(width / stride))
        assert tuple(feat.shape) == expected, f"{name}: {tuple(feat.shape)} != {expected}"
        assert torch.isfinite(feat).all()
    assert [shapes[f"res{i + 2}"].channels for i in range(4)] == [16, 32, 64, 128]
    assert model.size_divisibility == 32


def test_only_requested_features_are_built_and_returned():
    model = build_backbone(small_cfg(OUT_FEATURES=["res3", "res4"])).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["res3", "res4"] == list(model.output_shape())
    norms = {k.split(".")[0] for k in model.state_dict() if k.startswith("norm")}
    assert norms == {"norm1", "norm2"}


def test_forward_rejects_images_that_are_not_batched_channels_first():
    model = build_backbone(small_cfg()).eval()
    for bad in (torch.randn(3, 64, 64), torch.randn(1, 64, 64, 3)):
        with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
            model(bad)


def test_parameter_names_and_shapes_equal_the_published_manifest(reference_dir):
    manifests = published_shapes()
    assert len(manifests) == 8
    for config_path, manifest in manifests.items():
        published = {k[len("backbone."):]: list(v) for k, v in manifest.items() if k.startswith("backbone.")}
        with torch.device("meta"):
            model = build_backbone(published_cfg(config_path))
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert sorted(set(ours) - set(published)) == [], f"{config_path}: names the published model lacks"
        assert sorted(set(published) - set(ours)) == [], f"{config_path}: published names we lack"
        assert {k: v for k, v in ours.items() if v != published[k]} == {}, f"{config_path}: shapes differ"


def test_features_match_the_original_code_on_golden_inputs(reference_dir):
    golden = load_golden()
    cfg = published_cfg(golden["base_config"], golden["opts"])
    model = build_backbone(cfg).eval()
    prefix = "backbone."
    model.load_state_dict(
        {k[len(prefix):]: v for k, v in golden["model"]["model"].items() if k.startswith(prefix)}, strict=True
    )
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1)
    for n, (inputs, expected) in enumerate(zip(golden["inputs"], golden["stages"]["backbone"])):
        # As Mask2Former does: normalize, then zero-pad to the size divisibility.
        images = ImageList.from_tensors([(inputs["image"].float() - mean) / std], model.size_divisibility)
        with torch.no_grad():
            out = model(images.tensor)
        assert set(out) == set(expected)
        for name, ref in expected.items():
            assert out[name].shape == ref.shape, f"input {n} {name}: shape {tuple(out[name].shape)} != {tuple(ref.shape)}"
            diff = (out[name] - ref).abs().max().item()
            assert diff <= STAGE_TOL["backbone"], f"input {n} {name}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("frozen_stages, frozen_prefixes", [
    (-1, ()),
    (0, ("patch_embed.",)),
    (2, ("patch_embed.", "levels.0.", "levels.1.", "norm0.", "norm1.")),
])
def test_frozen_stages_have_no_trainable_parameters_and_stay_in_eval(frozen_stages, frozen_prefixes):
    model = build_backbone(small_cfg(FROZEN_STAGES=frozen_stages, DROP_PATH_RATE=0.5))
    model.train()
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    for name, m in model.named_modules():
        if name and (name + ".").startswith(frozen_prefixes):
            assert not m.training, f"{name} left eval mode"
        elif name:
            assert m.training, f"{name} is not in training mode"


def test_activation_checkpointing_gives_the_same_outputs_and_gradients(monkeypatch):
    plain = build_backbone(small_cfg(DROP_PATH_RATE=0.3)).train()
    ckpt = build_backbone(small_cfg(DROP_PATH_RATE=0.3, USE_CHECKPOINT=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    x = torch.randn(2, 3, 64, 48)
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # same stochastic-depth draws in both runs
        out = model(x)
        loss = sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in out.values())
        loss.backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}))
    assert len(calls) == 5, "USE_CHECKPOINT should checkpoint every block once"
    (out_a, grad_a), (out_b, grad_b) = results
    for name in out_a:
        torch.testing.assert_close(out_b[name], out_a[name], rtol=0, atol=1e-6)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        torch.testing.assert_close(grad_b[name], grad_a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_drop_path_rate_grows_linearly_over_all_blocks():
    model = build_backbone(small_cfg(DROP_PATH_RATE=0.4))
    rates = [getattr(blk.drop_path, "p", 0.0) for level in model.levels for blk in level.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_layer_scale_adds_gamma_parameters_and_ones_reduce_to_the_plain_block():
    scaled = build_backbone(small_cfg(LAYER_SCALE=1e-5)).eval()
    plain = build_backbone(small_cfg()).eval()
    gammas = {k: v for k, v in scaled.state_dict().items() if ".gamma" in k}
    assert len(gammas) == 2 * 5 and "levels.2.blocks.1.gamma2" in gammas
    assert all(torch.all(v == 1e-5) for v in gammas.values())
    assert set(scaled.state_dict()) - set(gammas) == set(plain.state_dict())

    plain.load_state_dict({k: v for k, v in scaled.state_dict().items() if k not in gammas})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(scaled(x)["res5"], plain(x)["res5"], atol=1e-3)
        for g in gammas:
            scaled.get_parameter(g).fill_(1.0)
        torch.testing.assert_close(scaled(x)["res5"], plain(x)["res5"])


@pytest.mark.parametrize("overrides, message", [
    (dict(DILATIONS=[[4], [2], [1], [1]]), r"DILATIONS\[2\].*DEPTHS\[2\] is 2"),
    (dict(DILATIONS=[[4], [2], [1, 2]]), r"DILATIONS has 3 lists"),
    (dict(NUM_HEADS=[1, 2, 4]), r"NUM_HEADS .* has 3 entries"),
    (dict(NUM_HEADS=[1, 3, 4, 8]), r"level 1 has 32 channels .*NUM_HEADS\[1\] = 3"),
    (dict(OUT_FEATURES=["res2", "res6"]), r"unknown names \['res6'\]"),
    (dict(OUT_FEATURES=[]), r"OUT_FEATURES \[\]: empty"),
    (dict(KERNEL_SIZE=4), r"KERNEL_SIZE must be an odd number"),
    (dict(FROZEN_STAGES=5), r"FROZEN_STAGES must be in -1..4"),
])
def test_inconsistent_config_is_rejected_with_the_key_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(small_cfg(**overrides))


def test_registered_under_d2dinat_and_built_from_cfg():
    from detectron2.modeling import BACKBONE_REGISTRY

    assert BACKBONE_REGISTRY.get("D2DiNAT") is D2DiNAT
    model = D2DiNAT(small_cfg(EMBED_DIM=8, NUM_HEADS=[1, 1, 2, 2]))
    assert isinstance(model, dinat_module.DiNAT)
    assert model.output_shape()["res5"].channels == 64


@pytest.mark.parametrize("argument, key, value", [
    ("kernel_size", "KERNEL_SIZE", 4),
    ("drop_path_rate", "DROP_PATH_RATE", 1.5),
    ("na_backend", "NA_BACKEND", "cuda"),
    ("frozen_stages", "FROZEN_STAGES", -2),
    ("num_heads", "NUM_HEADS", [1, 3, 4, 8]),
])
def test_a_bad_value_raises_in_dinat_terms_and_through_the_config_naming_its_key(argument, key, value):
    kwargs = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], kernel_size=5,
                  dilations=[[4], [2], [1, 2], [1]], mlp_ratio=2.0)
    kwargs[argument] = value
    with pytest.raises(ValueError) as plain:
        DiNAT(**kwargs)
    assert argument in str(plain.value) and "MODEL.DINAT" not in str(plain.value)
    with pytest.raises(ValueError) as configured:
        build_backbone(small_cfg(**{key: value}))
    message = str(configured.value)
    assert f"MODEL.DINAT.{key}" in message and argument not in message
    assert message == plain.value.named(CONFIG_KEYS)  # the same error, in config terms
