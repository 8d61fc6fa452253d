"""Neighborhood attention through torch.nn.attention.flex_attention.

The neighbourhood becomes a block mask (mask_mod from the window formula) and the relative
positional bias a score_mod, so this works with the published weights. Compiled (fused) on
CUDA; eager elsewhere, where it materialises the full score matrix (tests only).
"""
import functools

import torch

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except Exception as exc:  # older torch
    flex_attention = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def availability():
    if flex_attention is None:
        return False, f"torch.nn.attention.flex_attention not importable ({_IMPORT_ERROR})"
    return True, f"torch {torch.__version__} flex_attention (compiled on CUDA, eager elsewhere)"


def unsupported(query, rpb, dropout):
    if flex_attention is None:
        return f"flex_attention is not importable ({_IMPORT_ERROR})"
    if dropout:
        return "flex_attention has no attention dropout"
    return None


def _axis_window(pos, length: int, kernel_size: int, dilation: int):
    """(dilation group, index in group, window start in group) of integer tensor `pos`."""
    group = pos % dilation
    index = pos // dilation
    group_length = (length - group + dilation - 1) // dilation
    start = torch.clamp(index - kernel_size // 2, min=0)
    start = torch.minimum(start, group_length - kernel_size)
    return group, index, start


def _in_window(q_pos, kv_pos, length, kernel_size, dilation):
    group, _, start = _axis_window(q_pos, length, kernel_size, dilation)
    kv_index = kv_pos // dilation
    return (kv_pos % dilation == group) & (kv_index >= start) & (kv_index < start + kernel_size)


def _mask_mod(height, width, kernel_size, dilation):
    def mask_mod(b, h, q_idx, kv_idx):
        qy, qx = q_idx // width, q_idx % width
        ky, kx = kv_idx // width, kv_idx % width
        return (_in_window(qy, ky, height, kernel_size, dilation)
                & _in_window(qx, kx, width, kernel_size, dilation))
    return mask_mod


@functools.lru_cache(maxsize=64)
def _block_mask(height, width, kernel_size, dilation, device):
    n = height * width
    return create_block_mask(_mask_mod(height, width, kernel_size, dilation), B=None, H=None, Q_LEN=n, KV_LEN=n,
                             device=device)


def _bias_score_mod(rpb, width, kernel_size, dilation):
    top = 2 * kernel_size - 2

    def score_mod(score, b, h, q_idx, kv_idx):
        # outside the window the mask drops the score; clamping keeps the lookup in bounds
        dy = (kv_idx // width) // dilation - (q_idx // width) // dilation + kernel_size - 1
        dx = (kv_idx % width) // dilation - (q_idx % width) // dilation + kernel_size - 1
        return score + rpb[h, dy.clamp(0, top), dx.clamp(0, top)]
    return score_mod


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def na2d(query, key, value, kernel_size, dilation=1, rpb=None, scale=None):
    """Same contract as na_torch.na2d (layout [batch, heads, height, width, head_dim])."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    batch, heads, height, width, dim = query.shape
    q, k, v = (t.reshape(batch, heads, height * width, dim) for t in (query, key, value))
    mask = _block_mask(height, width, kernel_size, dilation, str(query.device))
    score_mod = None
    if rpb is not None:
        score_mod = _bias_score_mod(rpb.to(query.dtype), width, kernel_size, dilation)
    attend = _compiled_flex() if query.is_cuda else flex_attention
    out = attend(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale)
    return out.reshape(batch, heads, height, width, dim)
