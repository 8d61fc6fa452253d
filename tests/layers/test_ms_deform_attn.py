"""Multi-scale deformable attention: the op against a loop-by-loop bilinear reference, its
gradients, the backend dispatcher, and the MSDeformAttn module."""
import math
import sys
import types

import pytest
import torch

from mask2former_dinat.layers import msda_compiled, msda_torch
from mask2former_dinat.layers.ms_deform_attn import (
    ENV_VAR,
    MSDeformAttn,
    ms_deform_attn,
    select_backend,
)
from mask2former_dinat.layers.msda_compiled import availability as compiled_availability

SHAPES = [(3, 4), (2, 3), (1, 2)]  # (H, W) per level: non-square, and a 1-pixel-high level


def _layout(shapes):
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index, int(sizes.sum())


def _inputs(n=2, len_q=5, heads=2, head_dim=3, points=2, shapes=SHAPES, dtype=torch.float64, lo=-0.25, hi=1.25):
    spatial_shapes, level_start_index, len_in = _layout(shapes)
    value = torch.randn(n, len_in, heads, head_dim, dtype=dtype)
    locations = torch.empty(n, len_q, heads, len(shapes), points, 2, dtype=dtype).uniform_(lo, hi)
    weights = torch.rand(n, len_q, heads, len(shapes), points, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def reference_msda(value, shapes, locations, weights):
    """Deformable attention written out sample by sample: bilinear taps on pixel centres, zeros outside."""
    n, _, heads, head_dim = value.shape
    _, len_q, _, levels, points, _ = locations.shape
    out = torch.zeros(n, len_q, heads, head_dim, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(len_q):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(points):
                        # pixel (i, j) has its centre at ((j + 0.5) / W, (i + 0.5) / H)
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    tap = value[b, starts[lvl] + yy * w + xx, m]
                                    out[b, q, m] += weights[b, q, m, lvl, p] * wy * wx * tap
    return out.reshape(n, len_q, heads * head_dim)


@pytest.fixture(autouse=True)
def _auto_backend(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_torch_path_matches_per_sample_bilinear_reference_including_outside_samples():
    value, ss, lsi, loc, wts = _inputs()
    outside = ((loc < 0) | (loc > 1)).any(-1)
    assert outside.any() and (~outside).any()  # the case covers both kinds of sample
    got = ms_deform_attn(value, ss, lsi, loc, wts)
    assert got.shape == (2, 5, 6)
    torch.testing.assert_close(got, reference_msda(value, SHAPES, loc, wts), rtol=1e-12, atol=1e-12)


def test_sampling_at_pixel_centres_reads_the_pixels_and_far_outside_reads_zero():
    shapes = [(3, 4), (2, 3)]
    value, ss, lsi, _, _ = _inputs(n=1, len_q=1, heads=1, head_dim=2, points=1, shapes=shapes)
    for lvl, (h, w) in enumerate(shapes):
        start = int(lsi[lvl])
        for i in range(h):
            for j in range(w):
                loc = torch.full((1, 1, 1, 2, 1, 2), 5.0, dtype=value.dtype)  # other level: far outside
                loc[0, 0, 0, lvl, 0] = torch.tensor([(j + 0.5) / w, (i + 0.5) / h], dtype=value.dtype)
                wts = torch.ones(1, 1, 1, 2, 1, dtype=value.dtype)
                got = ms_deform_attn(value, ss, lsi, loc, wts)
                torch.testing.assert_close(got[0, 0], value[0, start + i * w + j, 0], rtol=0, atol=1e-12)


def test_samples_on_the_map_border_get_half_their_weight_from_zero_padding():
    shapes = [(2, 2)]
    value, ss, lsi, _, _ = _inputs(n=1, len_q=1, heads=1, head_dim=1, points=1, shapes=shapes)
    # x = 0 is the left edge: half-way between pixel column 0 and the zero padding
    loc = torch.tensor([0.0, 0.25], dtype=value.dtype).view(1, 1, 1, 1, 1, 2)
    got = ms_deform_attn(value, ss, lsi, loc, torch.ones(1, 1, 1, 1, 1, dtype=value.dtype))
    torch.testing.assert_close(got[0, 0], 0.5 * value[0, 0, 0], rtol=0, atol=1e-12)


def test_gradients_match_finite_differences_for_value_locations_and_weights():
    value, ss, lsi, loc, wts = _inputs(n=1, len_q=3, heads=2, head_dim=2, points=2, shapes=[(3, 4), (2, 3)],
                                       lo=-0.1, hi=1.1)
    for t in (value, loc, wts):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, l_, w: ms_deform_attn(v, ss, lsi, l_, w), (value, loc, wts),
                                    eps=1e-6, atol=1e-7)


def test_mismatched_spatial_shapes_and_value_length_is_a_clear_error():
    value, ss, lsi, loc, wts = _inputs()
    with pytest.raises(ValueError, match="sum to"):
        ms_deform_attn(value[:, :-1], ss, lsi, loc, wts)
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn(value, ss, lsi + 1, loc, wts)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, ss, lsi, loc, wts[..., :1])
    with pytest.raises(ValueError, match="dtype"):
        ms_deform_attn(value, ss, lsi, loc.float(), wts)


# ----------------------------------------------------------------------------- dispatcher


def test_dispatcher_runs_torch_on_cpu_and_says_why():
    value, _, _, loc, wts = _inputs()
    name, why = select_backend(value, loc, wts)
    assert name == "torch"
    assert "cpu" in why and "CUDA" in why


def test_dispatcher_honours_env_var_and_rejects_unknown_or_inapplicable_choices(monkeypatch):
    value, _, _, loc, wts = _inputs()
    monkeypatch.setenv(ENV_VAR, "torch")
    assert select_backend(value, loc, wts) == ("torch", f"forced by ${ENV_VAR}=torch")
    monkeypatch.setenv(ENV_VAR, "compiled")
    with pytest.raises(ValueError, match="CUDA only"):
        select_backend(value, loc, wts)
    monkeypatch.setenv(ENV_VAR, "cuda-please")
    with pytest.raises(ValueError, match="auto"):
        ms_deform_attn(value, *_layout(SHAPES)[:2], loc, wts)


def test_missing_or_incomplete_extension_is_reported_not_raised(monkeypatch):
    compiled_availability.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "MultiScaleDeformableAttention", None)  # import raises ImportError
        ok, why = compiled_availability()
        assert not ok and "not installed" in why
        compiled_availability.cache_clear()
        stub = types.ModuleType("MultiScaleDeformableAttention")
        monkeypatch.setitem(sys.modules, "MultiScaleDeformableAttention", stub)
        ok, why = compiled_availability()
        assert not ok and "ms_deform_attn_forward" in why
    finally:
        compiled_availability.cache_clear()


def _torch_path(value, ss, lsi, loc, wts):
    layout = [(h, w, s) for (h, w), s in zip(ss.tolist(), lsi.tolist())]
    return msda_torch.ms_deform_attn(value, ss, lsi, loc, wts, layout)


def test_compiled_wrapper_passes_arguments_and_gradients_in_the_extension_order(monkeypatch):
    """The autograd glue around the extension, driven by a stand-in that computes with the torch path."""
    calls = []

    def fake_forward(value, ss, lsi, loc, wts, im2col_step):
        calls.append(("forward", im2col_step))
        return _torch_path(value, ss, lsi, loc, wts)

    def fake_backward(value, ss, lsi, loc, wts, grad_output, im2col_step):
        calls.append(("backward", im2col_step))
        with torch.enable_grad():
            args = [t.detach().requires_grad_(True) for t in (value, loc, wts)]
            out = _torch_path(args[0], ss, lsi, args[1], args[2])
            return torch.autograd.grad(out, args, grad_output)

    fake = types.SimpleNamespace(ms_deform_attn_forward=fake_forward, ms_deform_attn_backward=fake_backward)
    monkeypatch.setitem(sys.modules, "MultiScaleDeformableAttention", fake)
    value, ss, lsi, loc, wts = _inputs()
    for t in (value, loc, wts):
        t.requires_grad_(True)
    out = msda_compiled._CompiledMSDA.apply(value, ss, lsi, loc, wts, 2)
    grads = torch.autograd.grad(out.square().sum(), (value, loc, wts))
    assert calls == [("forward", 2), ("backward", 2)]
    torch.testing.assert_close(out, reference_msda(value.detach(), SHAPES, loc.detach(), wts.detach()),
                               rtol=1e-12, atol=1e-12)
    ref = _torch_path(value, ss, lsi, loc, wts)
    for g, r in zip(grads, torch.autograd.grad(ref.square().sum(), (value, loc, wts))):
        torch.testing.assert_close(g, r)


def test_im2col_step_always_divides_the_batch():
    for batch in (1, 7, 128, 130, 256, 257):
        step = msda_compiled._im2col_step(batch)
        assert 1 <= step <= 128 and batch % step == 0


@pytest.mark.skipif(not (torch.cuda.is_available() and compiled_availability()[0]),
                    reason="needs CUDA and Mask2Former's compiled MultiScaleDeformableAttention extension")
def test_compiled_extension_matches_torch_path_on_cuda(monkeypatch):
    value, ss, lsi, loc, wts = (t.cuda() for t in _inputs(n=3, len_q=50, heads=4, head_dim=8, points=4,
                                                            shapes=[(16, 20), (8, 10), (4, 5)], dtype=torch.float32))
    assert select_backend(value, loc, wts)[0] == "compiled"
    monkeypatch.setenv(ENV_VAR, "compiled")
    compiled = ms_deform_attn(value, ss, lsi, loc, wts)
    monkeypatch.setenv(ENV_VAR, "torch")
    torch.testing.assert_close(compiled, ms_deform_attn(value, ss, lsi, loc, wts), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- module


def _flat_input(n, shapes, c):
    spatial_shapes, level_start_index, len_in = _layout(shapes)
    return torch.randn(n, len_in, c), spatial_shapes, level_start_index


def test_module_output_shapes_with_point_and_box_references():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2)
    x, ss, lsi = _flat_input(2, SHAPES, 32)
    query = torch.randn(2, 7, 32)
    assert attn(query, torch.rand(2, 7, 3, 2), x, ss, lsi).shape == (2, 7, 32)
    assert attn(query, torch.rand(2, 7, 3, 4), x, ss, lsi).shape == (2, 7, 32)
    with pytest.raises(ValueError, match="reference_points"):
        attn(query, torch.rand(2, 7, 3, 3), x, ss, lsi)
    with pytest.raises(ValueError, match="query"):
        attn(query[..., :16], torch.rand(2, 7, 3, 2), x, ss, lsi)


def test_padded_positions_do_not_influence_the_output():
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=4)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)  # spread the samples over the maps
    x, ss, lsi = _flat_input(2, SHAPES, 16)
    query, ref = torch.randn(2, 5, 16), torch.rand(2, 5, 3, 2)
    mask = torch.rand(2, x.shape[1]) < 0.4
    base = attn(query, ref, x, ss, lsi, mask)
    changed = x.masked_fill(mask[..., None], 100.0)
    torch.testing.assert_close(attn(query, ref, changed, ss, lsi, mask), base)
    # and the unmasked positions do matter
    assert not torch.allclose(attn(query, ref, x.masked_fill(~mask[..., None], 100.0), ss, lsi, mask), base)
    with pytest.raises(ValueError, match="input_padding_mask"):
        attn(query, ref, x, ss, lsi, mask.float())


def test_zero_offsets_sample_the_reference_pixel_centre():
    """One head, level and point, identity projections: output == input at the reference pixel."""
    c, shapes = 4, [(3, 5)]
    attn = MSDeformAttn(d_model=c, n_levels=1, n_heads=1, n_points=1)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(c))
            lin.bias.zero_()
    x, ss, lsi = _flat_input(1, shapes, c)
    iy, ix = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    centres = torch.stack([(ix + 0.5) / 5, (iy + 0.5) / 3], -1).reshape(1, 15, 1, 2)
    torch.testing.assert_close(attn(x, centres, x, ss, lsi), x, rtol=1e-5, atol=1e-6)
    boxes = torch.cat([centres, torch.full_like(centres, 0.3)], -1)  # zero offsets -> the box centre
    torch.testing.assert_close(attn(x, boxes, x, ss, lsi), x, rtol=1e-5, atol=1e-6)


def test_initialization_follows_deformable_detr():
    attn = MSDeformAttn(d_model=32, n_levels=2, n_heads=8, n_points=3)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.bias) == 0
    bias = attn.sampling_offsets.bias.view(8, 2, 3, 2)
    # head h points along angle 2*pi*h/8, scaled so the larger coordinate is 1, times (point + 1)
    torch.testing.assert_close(bias[0, 1, 2], torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(bias[1, 0, 1], torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(bias[6, 1, 0], torch.tensor([0.0, -1.0]), atol=1e-6, rtol=0)
    assert torch.count_nonzero(attn.value_proj.bias) == 0 and torch.count_nonzero(attn.output_proj.bias) == 0
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=30, n_heads=8)
