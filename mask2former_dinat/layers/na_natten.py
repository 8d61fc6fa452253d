"""Neighborhood attention through natten >= 0.20 (fused kernels; no relative positional bias)."""
import torch

try:
    import natten
except Exception as exc:  # natten is optional
    natten = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def availability():
    if natten is None:
        return False, f"natten not importable ({_IMPORT_ERROR})"
    kernels = "with compiled kernels (libnatten)" if getattr(natten, "HAS_LIBNATTEN", False) else (
        "without compiled kernels: unfused flex fallback only")
    return True, f"natten {natten.__version__} {kernels}; serves calls without rpb only"


def has_fused_kernels(device: torch.device):
    """(True, why) when natten has compiled kernels usable for tensors on this device."""
    if natten is None:
        return False, f"natten not importable ({_IMPORT_ERROR})"
    if device.type != "cuda":
        return False, "natten's fused kernels are CUDA-only"
    if not getattr(natten, "HAS_LIBNATTEN", False):
        return False, "natten was installed without its compiled library"
    return True, "natten CUDA kernels"


def unsupported(query, rpb, dropout):
    if natten is None:
        return f"natten is not importable ({_IMPORT_ERROR})"
    if rpb is not None:
        return "natten >= 0.20 has no relative positional bias (rpb) support"
    if dropout:
        return "natten has no attention dropout"
    return None


def na2d(query, key, value, kernel_size, dilation=1, rpb=None, scale=None):
    """Same contract as na_torch.na2d (layout [batch, heads, height, width, head_dim]); rpb must be None."""
    if rpb is not None:
        raise ValueError("natten >= 0.20 has no relative positional bias; use the torch or flex backend")
    if scale is None:
        scale = query.shape[-1] ** -0.5
    # natten is heads-last: [batch, height, width, heads, head_dim]
    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (query, key, value))
    out = natten.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation, stride=1, is_causal=False, scale=scale)
    return out.permute(0, 3, 1, 2, 4)
