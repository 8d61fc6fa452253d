"""Dilated neighborhood attention from standard tensor ops, for ONNX and torch.export.

The same values as na_torch.py (natten <= 0.17 windows and bias), written so that an exporter
can record it: the neighbour indices of every position are computed with tensor arithmetic
from the map's size (arange, floor division, clamp), so a graph exported with symbolic height
and width stays correct at every size; there is no Python branch on sizes or data, no in-place
scatter and no custom autograd function. Per axis of length L, kernel k, dilation d, position i:
group g = i mod d, index in the group gi = i div d, group length Lg = (L - g + d - 1) div d,
window start s = clamp(gi - k div 2, 0, Lg - k), neighbours (s + j) * d + g, bias index
s + j - gi + k - 1.

Work is one loop over the k window rows (unrolled by the exporter, k is a constant): gather
that row's neighbour keys [B, heads, H, W, k, D], take its k logits; softmax over all k*k;
then the same gathers of the values. Peak memory is one row of neighbours (k * H * W * D per
head), not the k*k of a naive gather. It exists to be exported: autograd differentiates it like
any torch code, but it declines attention dropout (export is for inference).
"""
import torch

NAME = "export"


def availability():
    return True, "standard tensor ops that ONNX and torch.export record (picked while exporting)"


def unsupported(query, rpb, attn_drop, needs_backward=False, automatic=False):
    """Serves calls without attention dropout (the backend protocol is in backend_dispatch.py)."""
    if attn_drop > 0:
        return "attention dropout is not supported (export is for inference)"
    if automatic:
        return "picked only while exporting (the torch backend is faster in eager mode)"
    return None


def window_indices(length, kernel_size: int, dilation: int, device):
    """Per-axis neighbours [L, k] (long) and bias indices [L, k] (0..2k-2) of an axis of `length`
    (an int, or a size that an exporter traces symbolically)."""
    pos = torch.arange(length, device=device)
    group = pos % dilation
    in_group = torch.div(pos, dilation, rounding_mode="floor")
    group_length = torch.div(length - group + dilation - 1, dilation, rounding_mode="floor")
    start = torch.minimum((in_group - kernel_size // 2).clamp(min=0), group_length - kernel_size)
    steps = torch.arange(kernel_size, device=device)
    window = start[:, None] + steps[None, :]  # [L, k] in group coordinates
    return window * dilation + group[:, None], window - in_group[:, None] + kernel_size - 1


def na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop):
    """Neighborhood attention on [batch, heads, height, width, head_dim] tensors (arguments as
    neighborhood_attention.na2d checked them); returns [batch, heads, height, width, head_dim]."""
    batch, heads, height, width, dim = query.shape
    k = kernel_size
    rows, row_bias = window_indices(height, k, dilation, query.device)  # [H, k]
    cols, col_bias = window_indices(width, k, dilation, query.device)  # [W, k]
    acc = torch.promote_types(query.dtype, torch.float32)
    q = (query * scale).to(acc)

    def neighbours(t, j):
        """[B, heads, H, W, k, D]: for each query, the k neighbours on window row j."""
        row = t.index_select(2, rows[:, j])  # [B, heads, H, W, D]
        return row.index_select(3, cols.reshape(-1)).reshape(batch, heads, height, width, k, dim)

    logits = torch.stack(
        [torch.einsum("bnyxd,bnyxjd->bnyxj", q, neighbours(key, j).to(acc)) for j in range(k)], dim=4
    )  # [B, heads, H, W, k (row), k (column)]
    if rpb is not None:
        # bias[h, y, x, i, j] = rpb[h, row_bias[y, i], col_bias[x, j]]
        table = rpb.to(acc)[:, row_bias]  # [heads, H, k, 2k-1]
        bias = table[:, :, :, col_bias]  # [heads, H, k, W, k]
        logits = logits + bias.permute(0, 1, 3, 2, 4)[None]
    probs = torch.softmax(logits.reshape(batch, heads, height, width, k * k), dim=-1)
    probs = probs.reshape(batch, heads, height, width, k, k).to(value.dtype)
    out = None
    for j in range(k):
        part = torch.einsum("bnyxj,bnyxjd->bnyxd", probs[:, :, :, :, j], neighbours(value, j))
        out = part if out is None else out + part
    return out
