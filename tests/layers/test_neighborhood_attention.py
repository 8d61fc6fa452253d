"""na2d (every backend) against the published semantics: natten 0.17 golden cases and the
slow reference in tests/helpers/na_reference.py."""
import pytest
import torch
from helpers.backends import backends, needs_natten
from helpers.na_reference import na2d_reference, na2d_reference_logits
from helpers.reference import load_torch

from mask2former_dinat.layers import na2d, na_backend, na_natten

# (batch, heads, height, width, head_dim, kernel_size, dilation): kernel sizes 3..13, dilations
# 1..14, maps exactly kernel*dilation, a little larger, non-square, and large enough for the
# torch backend to have interior tiles and partial last tiles.
SHAPES = [
    (1, 1, 3, 3, 8, 3, 1),
    (2, 3, 30, 29, 8, 3, 1),
    (1, 2, 42, 45, 8, 3, 14),
    (2, 2, 10, 13, 8, 5, 2),
    (1, 2, 16, 15, 8, 5, 3),
    (1, 1, 35, 38, 8, 5, 7),
    (1, 2, 7, 12, 16, 7, 1),
    (1, 2, 14, 17, 8, 7, 2),
    (2, 1, 36, 37, 8, 9, 4),
    (1, 1, 11, 11, 8, 11, 1),
    (1, 2, 23, 22, 8, 11, 2),
    (1, 2, 13, 16, 8, 13, 1),
    (1, 1, 26, 29, 8, 13, 2),
    (1, 1, 100, 13, 4, 5, 1),  # an axis long enough for the torch backend's large-map tiles
]
SHAPE_IDS = ["b{}h{}_{}x{}_d{}_k{}_dil{}".format(*s) for s in SHAPES]


def _inputs(shape, with_rpb, dtype=torch.float32):
    batch, heads, height, width, dim, k, _ = shape
    q, key, v = (torch.randn(batch, heads, height, width, dim, dtype=dtype) for _ in range(3))
    rpb = torch.randn(heads, 2 * k - 1, 2 * k - 1, dtype=dtype) if with_rpb else None
    return q, key, v, rpb


@pytest.fixture
def golden():
    return load_torch("na_golden.pt")["cases"]


def test_reference_reproduces_natten_golden_logits_and_outputs(golden):
    with_logits = [case for case in golden if "logits" in case]
    assert len(with_logits) == 4  # tests/reference/README.md: all but the bias-free case
    for case in golden:
        if "logits" in case:
            logits = na2d_reference_logits(case["q"], case["k"], case["kernel_size"], case["dilation"], case["rpb"], 1.0)
            torch.testing.assert_close(logits, case["logits"], atol=1e-5, rtol=1e-5)
        out = na2d_reference(case["q"], case["k"], case["v"], case["kernel_size"], case["dilation"], case["rpb"], 1.0)
        torch.testing.assert_close(out, case["out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", backends("torch", "flex", "natten"))
def test_backend_reproduces_natten_golden_outputs(golden, backend):
    served = 0
    for case in golden:
        if backend == "natten" and case["rpb"] is not None:
            continue
        with na_backend(backend):
            out = na2d(case["q"], case["k"], case["v"], case["kernel_size"], case["dilation"], case["rpb"], scale=1.0)
        torch.testing.assert_close(out, case["out"], atol=1e-5, rtol=1e-5)
        served += 1
    assert served > 0


@pytest.mark.parametrize("with_rpb", [True, False], ids=["rpb", "no_rpb"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_torch_backend_matches_reference(shape, with_rpb):
    q, k, v, rpb = _inputs(shape, with_rpb)
    with na_backend("torch"):
        out = na2d(q, k, v, shape[5], shape[6], rpb)
    torch.testing.assert_close(out, na2d_reference(q, k, v, shape[5], shape[6], rpb), atol=2e-5, rtol=1e-5)


# flex and natten run unfused on CPU (full score matrices): the smaller maps, all kernel sizes
# and dilations up to 14.
FUSED_SHAPES = [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] <= 1000] + [(1, 1, 42, 43, 8, 3, 14)]


@pytest.mark.parametrize("backend, with_rpb", [("flex", True), ("flex", False),
                                               pytest.param("natten", False, marks=needs_natten)])
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=["b{}h{}_{}x{}_d{}_k{}_dil{}".format(*s) for s in FUSED_SHAPES])
def test_fused_backends_match_reference(shape, backend, with_rpb):
    q, k, v, rpb = _inputs(shape, with_rpb)
    with na_backend(backend):
        out = na2d(q, k, v, shape[5], shape[6], rpb)
    torch.testing.assert_close(out, na2d_reference(q, k, v, shape[5], shape[6], rpb), atol=2e-5, rtol=1e-5)


def test_scale_argument_scales_logits_but_not_bias():
    shape = (1, 2, 9, 10, 8, 3, 2)
    q, k, v, rpb = _inputs(shape, True)
    expected = na2d_reference(q, k, v, 3, 2, rpb, scale=0.3)
    torch.testing.assert_close(na2d(q, k, v, 3, 2, rpb, scale=0.3), expected, atol=2e-5, rtol=1e-5)
    # default scale is head_dim ** -0.5
    torch.testing.assert_close(na2d(q, k, v, 3, 2, rpb), na2d_reference(q, k, v, 3, 2, rpb, scale=8 ** -0.5),
                               atol=2e-5, rtol=1e-5)


GRAD_SHAPES = [
    (2, 2, 9, 13, 4, 3, 2),
    (1, 2, 23, 21, 4, 5, 3),
    (1, 1, 11, 12, 4, 11, 1),
    (1, 2, 20, 19, 4, 3, 1),
    (1, 1, 98, 9, 2, 3, 1),
]


@pytest.mark.parametrize("with_rpb", [True, False], ids=["rpb", "no_rpb"])
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda s: f"{s[2]}x{s[3]}_k{s[5]}_d{s[6]}")
def test_torch_backend_gradients_match_reference_autograd_float64(shape, with_rpb):
    q, k, v, rpb = _inputs(shape, with_rpb, torch.float64)
    leaves = [t.requires_grad_() for t in (q, k, v, rpb) if t is not None]
    kernel_size, dilation = shape[5], shape[6]
    with na_backend("torch"):
        out = na2d(q, k, v, kernel_size, dilation, rpb)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, grad_out)
    expected_out = na2d_reference(q, k, v, kernel_size, dilation, rpb)
    expected = torch.autograd.grad(expected_out, leaves, grad_out)
    torch.testing.assert_close(out, expected_out, atol=1e-12, rtol=1e-10)
    for name, got, want in zip("qkvr", grads, expected):
        torch.testing.assert_close(got, want, atol=1e-11, rtol=1e-9, msg=lambda m, name=name: f"grad {name}: {m}")


def test_dropout_path_gradients_match_reference_when_nothing_is_dropped():
    """With attention dropout the torch backend runs under plain autograd; same gradients."""
    shape = (2, 2, 14, 13, 4, 5, 2)
    q, k, v, rpb = _inputs(shape, True, torch.float64)
    leaves = [t.requires_grad_() for t in (q, k, v, rpb)]
    out = na2d(q, k, v, 5, 2, rpb, attn_drop=1e-12, training=True)
    grad_out = torch.randn_like(out)
    expected_out = na2d_reference(q, k, v, 5, 2, rpb)
    torch.testing.assert_close(out, expected_out, atol=1e-10, rtol=1e-9)
    for got, want in zip(torch.autograd.grad(out, leaves, grad_out),
                         torch.autograd.grad(expected_out, leaves, grad_out)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)


def test_torch_backend_reads_strided_views_without_copies_going_wrong():
    """q/k/v as the module makes them: views into one [B, H, W, 3, heads, D] projection."""
    batch, height, width, heads, dim = 2, 12, 15, 3, 8
    qkv = torch.randn(batch, height, width, 3, heads, dim, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    rpb = torch.randn(heads, 9, 9, dtype=torch.float64, requires_grad=True)
    out = na2d(q, k, v, 5, 2, rpb)
    expected = na2d_reference(q.contiguous(), k.contiguous(), v.contiguous(), 5, 2, rpb)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, [qkv, rpb], grad_out)
    want = torch.autograd.grad(expected, [qkv, rpb], grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


# float16/bfloat16 outputs of unit-scale inputs: within 3e-3 / 2e-2 (max abs) of the float32 reference
HALF_TOLERANCE = {torch.float16: 3e-3, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", backends("torch", "flex", "natten"))
def test_half_precision_within_tolerance(dtype, backend):
    shape = (1, 2, 19, 20, 16, 5, 2)
    q, k, v, rpb = _inputs(shape, backend != "natten")
    expected = na2d_reference(q, k, v, 5, 2, rpb)
    cast = [None if t is None else t.to(dtype) for t in (q, k, v, rpb)]
    with na_backend(backend):
        out = na2d(*cast[:3], 5, 2, cast[3])
    assert out.dtype == dtype
    assert (out.float() - expected).abs().max().item() < HALF_TOLERANCE[dtype]


def test_torch_backend_half_precision_backward_runs_and_is_close():
    shape = (1, 2, 12, 13, 8, 5, 2)
    q, k, v, rpb = _inputs(shape, True)
    leaves32 = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    leaves16 = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v, rpb)]
    grad = torch.randn(q.shape)
    g32 = torch.autograd.grad(na2d(*leaves32[:3], 5, 2, leaves32[3]), leaves32, grad)
    g16 = torch.autograd.grad(na2d(*leaves16[:3], 5, 2, leaves16[3]), leaves16, grad.to(torch.bfloat16))
    for a, b in zip(g32, g16):
        assert b.dtype == torch.bfloat16
        assert (a - b.float()).abs().max().item() < 0.05 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize(
    "height, width, kernel_size, dilation, match",
    [
        (10, 12, 11, 1, r"10x12 is smaller than kernel_size\*dilation = 11\*1 = 11"),
        (20, 13, 7, 2, r"20x13 is smaller than kernel_size\*dilation = 7\*2 = 14"),
        (12, 12, 4, 1, "odd integer"),
        (12, 12, 1, 1, "odd integer"),
        (12, 12, 3, 0, "dilation must be an integer >= 1"),
    ],
)
def test_invalid_sizes_raise_value_error(height, width, kernel_size, dilation, match):
    q = torch.randn(1, 1, height, width, 8)
    with pytest.raises(ValueError, match=match):
        na2d(q, q, q, kernel_size, dilation)


def test_mismatched_shapes_raise_value_error():
    q = torch.randn(1, 2, 12, 12, 8)
    with pytest.raises(ValueError, match="same shape"):
        na2d(q, q[:, :, :11], q, 3)
    with pytest.raises(ValueError, match="same shape"):
        na2d(q, q, q[..., :4], 3)
    with pytest.raises(ValueError, match=r"rpb must be \[heads, 2k-1, 2k-1\] = \[2, 5, 5\]"):
        na2d(q, q, q, 3, rpb=torch.zeros(2, 7, 7))
    with pytest.raises(ValueError, match=r"\[batch, heads, height, width, head_dim\]"):
        na2d(q[0], q[0], q[0], 3)
    with pytest.raises(ValueError, match="dtype"):
        na2d(q, q.double(), q, 3)


def test_attention_dropout_applies_in_training_only():
    shape = (1, 2, 12, 12, 8, 3, 1)
    q, k, v, rpb = _inputs(shape, True)
    eval_out = na2d(q, k, v, 3, 1, rpb, attn_drop=0.5, training=False)
    torch.testing.assert_close(eval_out, na2d_reference(q, k, v, 3, 1, rpb), atol=2e-5, rtol=1e-5)
    # dropping every probability leaves nothing
    assert na2d(q, k, v, 3, 1, rpb, attn_drop=1.0, training=True).abs().max().item() == 0.0
    assert not torch.allclose(na2d(q, k, v, 3, 1, rpb, attn_drop=0.5, training=True), eval_out)


@needs_natten
def test_natten_backend_equals_torch_when_it_serves():
    """natten (CPU fallback here) and the torch kernel agree on a DiNAT-like head size."""
    if na_natten.unsupported(torch.zeros(1, 1, 1, 1, 32), None, False) is not None:
        pytest.fail("natten is installed in this environment and must serve rpb-free float32 calls")
    q, k, v, _ = _inputs((1, 2, 24, 26, 32, 7, 3), False)
    with na_backend("natten"):
        got = na2d(q, k, v, 7, 3)
    with na_backend("torch"):
        want = na2d(q, k, v, 7, 3)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "flex"])
def test_cuda_backends_match_reference_with_gradients(backend):
    shape = (2, 2, 23, 22, 32, 11, 2)
    q, k, v, rpb = _inputs(shape, True)
    leaves = [t.requires_grad_() for t in (q, k, v, rpb)]
    expected = na2d_reference(q, k, v, 11, 2, rpb)
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, leaves, grad_out)
    cuda = [t.detach().cuda().requires_grad_() for t in leaves]
    with na_backend(backend):
        out = na2d(*cuda[:3], 11, 2, cuda[3])
    grads = torch.autograd.grad(out, cuda, grad_out.cuda())
    torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=1e-4)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=1e-3)
