"""NeighborhoodAttention2D: published parameter layout and natten 0.14's pad-then-crop."""

import pytest
import torch
from helpers.configs import published_shapes
from helpers.na_reference import na2d_reference
from torch.nn import functional as F

from mask2former_dinat.layers import NeighborhoodAttention2D


def _explicit(module, x, pad_h, pad_w):
    """What natten 0.14's module computes, spelled out with the reference op."""
    batch, height, width, dim = x.shape
    heads = module.num_heads
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    qkv = module.qkv(x).reshape(batch, height + pad_h, width + pad_w, 3, heads, dim // heads)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5)
    out = na2d_reference(q, k, v, module.kernel_size, module.dilation, module.rpb, module.scale)
    out = out.permute(0, 2, 3, 1, 4).reshape(batch, height + pad_h, width + pad_w, dim)[:, :height, :width]
    return module.proj(out)


def test_parameters_match_published_checkpoint_layout(reference_dir):
    manifest = published_shapes()
    published = next(iter(manifest.values()))
    prefix = "backbone.levels.0.blocks.0.attn."
    expected = {name[len(prefix):]: shape for name, shape in published.items() if name.startswith(prefix)}
    module = NeighborhoodAttention2D(192, 6, 11, dilation=14)
    got = {name: list(t.shape) for name, t in module.state_dict().items()}
    assert got == expected


def test_rpb_initialised_with_small_truncated_normal():
    module = NeighborhoodAttention2D(64, 8, 13)
    assert module.rpb.shape == (8, 25, 25)
    assert 0.01 < module.rpb.std().item() < 0.03
    assert module.rpb.abs().max().item() <= 2.0


@pytest.mark.parametrize(
    "height, width, kernel_size, dilation",
    [(10, 25, 7, 3), (30, 8, 5, 2), (6, 5, 7, 1), (12, 13, 3, 4)],
)
def test_small_inputs_are_zero_padded_before_qkv_and_cropped(height, width, kernel_size, dilation):
    module = NeighborhoodAttention2D(32, 4, kernel_size, dilation).eval()
    x = torch.randn(2, height, width, 32)
    span = kernel_size * dilation
    expected = _explicit(module, x, max(0, span - height), max(0, span - width))
    out = module(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_small_input_equals_cropped_run_on_zero_padded_input():
    """Padded tokens are zeros before the projection (so their k/v are the qkv bias)."""
    module = NeighborhoodAttention2D(16, 2, 5, 2).eval()
    with torch.no_grad():
        module.qkv.bias.normal_()
    x = torch.randn(1, 9, 12, 16)
    padded = module(F.pad(x, (0, 0, 0, 0, 0, 1)))[:, :9]  # 9 rows -> 10 = kernel*dilation
    torch.testing.assert_close(module(x), padded, atol=1e-5, rtol=1e-5)


def test_large_input_needs_no_padding_and_matches_reference():
    module = NeighborhoodAttention2D(24, 3, 5, 2, qkv_bias=False, rel_pos_bias=False).eval()
    assert module.rpb is None and module.qkv.bias is None
    x = torch.randn(1, 13, 17, 24)
    torch.testing.assert_close(module(x), _explicit(module, x, 0, 0), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    module = NeighborhoodAttention2D(16, 2, 3, 2)
    module(torch.randn(2, 7, 9, 16)).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_qk_scale_overrides_default_scale():
    assert NeighborhoodAttention2D(64, 4, 3).scale == 16 ** -0.5
    assert NeighborhoodAttention2D(64, 4, 3, qk_scale=0.5).scale == 0.5


def test_backend_argument_is_validated_and_forwarded():
    with pytest.raises(ValueError, match="unknown neighborhood-attention backend 'cuda'"):
        NeighborhoodAttention2D(16, 2, 3, backend="cuda")
    module = NeighborhoodAttention2D(16, 2, 3, backend="natten")
    with pytest.raises(ValueError, match="natten.*rpb"):
        module(torch.randn(1, 5, 5, 16))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 30, "num_heads": 4, "kernel_size": 3}, "divisible"),
        ({"dim": 32, "num_heads": 4, "kernel_size": 4}, "odd"),
        ({"dim": 32, "num_heads": 4, "kernel_size": 3, "dilation": 0}, "dilation"),
    ],
)
def test_invalid_construction_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeighborhoodAttention2D(**kwargs)


def test_rejects_non_channels_last_input():
    with pytest.raises(ValueError, match=r"\[batch, height, width, dim\]"):
        NeighborhoodAttention2D(16, 2, 3)(torch.randn(1, 16, 5, 5, 1))
