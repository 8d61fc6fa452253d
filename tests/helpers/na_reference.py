"""Slow neighborhood attention straight from the definition (test oracle).

Independent of the package's kernels: one query at a time, window computed with
Python integers from the formula in /work/shared/NOTES.md. Layout
[batch, heads, height, width, head_dim]; rpb [heads, 2k-1, 2k-1] or None.
"""
import torch


def neighbors_1d(i: int, length: int, kernel_size: int, dilation: int):
    """Window of position i on an axis: (start in its dilation group, group index, neighbour positions)."""
    group = i % dilation
    group_index = i // dilation
    group_length = -(-(length - group) // dilation)
    start = min(max(group_index - kernel_size // 2, 0), group_length - kernel_size)
    positions = [(start + j) * dilation + group for j in range(kernel_size)]
    return start, group_index, positions


def na2d_reference_logits(query, key, kernel_size, dilation=1, rpb=None, scale=1.0):
    """Logits [batch, heads, height, width, k*k]: scale * q.k + rpb, neighbours row-major."""
    batch, heads, height, width, dim = query.shape
    logits = query.new_zeros(batch, heads, height, width, kernel_size * kernel_size)
    for y in range(height):
        sy, gy, rows = neighbors_1d(y, height, kernel_size, dilation)
        for x in range(width):
            sx, gx, cols = neighbors_1d(x, width, kernel_size, dilation)
            keys = key[:, :, rows][:, :, :, cols]  # [B, heads, k, k, D]
            dots = (keys * query[:, :, y, x, None, None, :]).sum(-1) * scale
            if rpb is not None:
                by = [sy + j - gy + kernel_size - 1 for j in range(kernel_size)]
                bx = [sx + j - gx + kernel_size - 1 for j in range(kernel_size)]
                dots = dots + rpb[:, by][:, :, bx]
            logits[:, :, y, x] = dots.reshape(batch, heads, -1)
    return logits


def na2d_reference(query, key, value, kernel_size, dilation=1, rpb=None, scale=None):
    """Output [batch, heads, height, width, head_dim] of dilated neighborhood attention."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    logits = na2d_reference_logits(query, key, kernel_size, dilation, rpb, scale)
    probs = logits.softmax(-1)
    height, width = query.shape[2:4]
    out = torch.zeros_like(query)
    for y in range(height):
        _, _, rows = neighbors_1d(y, height, kernel_size, dilation)
        for x in range(width):
            _, _, cols = neighbors_1d(x, width, kernel_size, dilation)
            values = value[:, :, rows][:, :, :, cols].flatten(2, 3)  # [B, heads, k*k, D]
            out[:, :, y, x] = (probs[:, :, y, x, :, None] * values).sum(2)
    return out
