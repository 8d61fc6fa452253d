"""Slow neighborhood attention straight from the definition (test oracle).

Independent of the package's kernels: each query's window is computed with Python
integers from the formula in /work/shared/NOTES.md, then every query gathers its k*k
neighbours explicitly (a [.., height, width, k*k, head_dim] tensor: tiny inputs only).
Layout [batch, heads, height, width, head_dim]; rpb [heads, 2k-1, 2k-1] or None.
"""
import torch


def neighbors_1d(i: int, length: int, kernel_size: int, dilation: int):
    """Window of position i on an axis: (neighbour positions, bias rows/cols into rpb)."""
    group = i % dilation
    group_index = i // dilation
    group_length = -(-(length - group) // dilation)
    start = min(max(group_index - kernel_size // 2, 0), group_length - kernel_size)
    positions = [(start + j) * dilation + group for j in range(kernel_size)]
    bias = [start + j - group_index + kernel_size - 1 for j in range(kernel_size)]
    return positions, bias


def _windows(length, kernel_size, dilation):
    pos, bias = zip(*(neighbors_1d(i, length, kernel_size, dilation) for i in range(length)))
    return torch.tensor(pos), torch.tensor(bias)  # [length, k] each


def _gather_neighbors(t, rows, cols):
    """t [B, heads, H, W, D] -> [B, heads, H, W, k*k, D]: t at every query's neighbours, row-major."""
    g = t[:, :, rows]  # [B, heads, H, ky, W, D]
    g = g[:, :, :, :, cols]  # [B, heads, H, ky, W, kx, D]
    return g.permute(0, 1, 2, 4, 3, 5, 6).flatten(4, 5)


def na2d_reference_logits(query, key, kernel_size, dilation=1, rpb=None, scale=1.0):
    """Logits [batch, heads, height, width, k*k]: scale * q.k + rpb, neighbours row-major."""
    height, width = query.shape[2:4]
    rows, row_bias = _windows(height, kernel_size, dilation)
    cols, col_bias = _windows(width, kernel_size, dilation)
    keys = _gather_neighbors(key, rows, cols)
    logits = (keys * query[:, :, :, :, None, :]).sum(-1) * scale
    if rpb is not None:
        # bias[h, y, x, jy, jx] = rpb[h, row_bias[y, jy], col_bias[x, jx]]
        bias = rpb[:, row_bias[:, None, :, None], col_bias[None, :, None, :]]
        logits = logits + bias.flatten(3, 4)
    return logits


def na2d_reference(query, key, value, kernel_size, dilation=1, rpb=None, scale=None):
    """Output [batch, heads, height, width, head_dim] of dilated neighborhood attention."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    height, width = query.shape[2:4]
    probs = na2d_reference_logits(query, key, kernel_size, dilation, rpb, scale).softmax(-1)
    rows, _ = _windows(height, kernel_size, dilation)
    cols, _ = _windows(width, kernel_size, dilation)
    values = _gather_neighbors(value, rows, cols)
    return (probs[..., None] * values).sum(-2)
