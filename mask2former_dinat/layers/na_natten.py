"""Neighborhood attention through natten >= 0.20 (fused kernels; no relative positional bias)."""
import functools

import torch


@functools.lru_cache(maxsize=1)
def _load():
    """(natten module or None, import error); imported on first use, it is optional and slow to import."""
    try:
        import natten
    except Exception as exc:  # noqa: BLE001  (optional package: any import failure means "unavailable")
        return None, f"{type(exc).__name__}: {exc}"
    return natten, None


NAME = "natten"


def availability():
    natten, import_error = _load()
    if natten is None:
        return False, f"natten not importable ({import_error})"
    kernels = "with compiled kernels (libnatten)" if getattr(natten, "HAS_LIBNATTEN", False) else (
        "without compiled kernels: unfused flex fallback only")
    return True, f"natten {natten.__version__} {kernels}; serves calls without rpb only"


def has_fused_kernels(device: torch.device):
    """(True, why) when natten has compiled kernels usable for tensors on this device."""
    natten, import_error = _load()
    if natten is None:
        return False, f"natten not importable ({import_error})"
    if device.type != "cuda":
        return False, "natten's fused kernels are CUDA-only"
    if not getattr(natten, "HAS_LIBNATTEN", False):
        return False, "natten was installed without its compiled library"
    return True, "natten CUDA kernels"


def unsupported(query, rpb, attn_drop, needs_backward=False, automatic=False):
    """Why natten cannot serve this call, or None (the backend protocol is in backend_dispatch.py)."""
    if rpb is not None:  # first: it holds whether or not natten is installed
        return "natten >= 0.20 has no relative positional bias (rpb) support"
    natten, import_error = _load()
    if natten is None:
        return f"natten is not importable ({import_error})"
    if attn_drop:
        return "natten has no attention dropout"
    if query.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"natten supports float32/float16/bfloat16, not {query.dtype}"
    dim = query.shape[-1]
    if not (8 <= dim <= 256 and dim & (dim - 1) == 0):
        return f"natten needs a power-of-two head_dim in 8..256, got {dim}"
    fused, why_not = has_fused_kernels(query.device)
    if not fused and needs_backward:
        return f"natten without compiled kernels has no backward on {query.device.type}"
    if automatic and not fused:
        return f"{why_not}, and its unfused fallback is slower than the other backends"
    return None


def na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop):
    """Same contract as na_torch.na2d; rpb is None and attn_drop 0 (unsupported() refuses both)."""
    natten = _load()[0]
    # natten is heads-last: [batch, height, width, heads, head_dim]
    q, k, v = (t.permute(0, 2, 3, 1, 4).contiguous() for t in (query, key, value))
    out = natten.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation, stride=1, is_causal=False, scale=scale)
    return out.permute(0, 3, 1, 2, 4)
