"""Pure-PyTorch dilated neighborhood attention (runs everywhere)."""
import torch


def axis_windows(length: int, kernel_size: int, dilation: int, device=None):
    """Per-axis neighbourhoods: (positions [length, k], bias offsets [length, k]).

    positions[i, j] is the j-th neighbour of position i; offsets[i, j] indexes the
    relative-position bias table (0 .. 2k-2).
    """
    i = torch.arange(length, device=device)
    group = i % dilation
    group_index = i // dilation
    group_length = torch.div(length - group + dilation - 1, dilation, rounding_mode="floor")
    start = torch.minimum((group_index - kernel_size // 2).clamp(min=0), group_length - kernel_size)
    j = torch.arange(kernel_size, device=device)
    positions = (start[:, None] + j) * dilation + group[:, None]
    offsets = start[:, None] + j - group_index[:, None] + kernel_size - 1
    return positions, offsets


def availability():
    return True, "pure PyTorch, runs on every device and dtype"


def unsupported(query, rpb, dropout):
    return None


def na2d(query, key, value, kernel_size, dilation=1, rpb=None, scale=None, attn_drop=0.0):
    """Neighborhood attention on [batch, heads, height, width, head_dim] tensors.

    attn_drop > 0 applies dropout to the attention probabilities (callers pass it only in training).
    """
    if scale is None:
        scale = query.shape[-1] ** -0.5
    batch, heads, height, width, dim = query.shape
    k = kernel_size
    rows, row_off = axis_windows(height, k, dilation, query.device)
    cols, col_off = axis_windows(width, k, dilation, query.device)
    outs = []
    chunk = max(1, 4096 // (width * k * k))
    q = query * scale
    for y0 in range(0, height, chunk):
        y1 = min(height, y0 + chunk)
        r = rows[y0:y1]
        keys = key[:, :, r][:, :, :, :, cols]  # [B, h, c, k, W, k, D]
        vals = value[:, :, r][:, :, :, :, cols]
        logits = torch.einsum("bhywd,bhyiwjd->bhywij", q[:, :, y0:y1], keys)
        if rpb is not None:
            bias = rpb[:, row_off[y0:y1, None, :, None], col_off[None, :, None, :]]  # [h, c, W, k, k]
            logits = logits + bias
        probs = logits.flatten(-2).softmax(-1)
        if attn_drop > 0:
            probs = torch.nn.functional.dropout(probs, attn_drop, True)
        outs.append(torch.einsum("bhywij,bhyiwjd->bhywd", probs.view_as(logits), vals))
    return torch.cat(outs, 2)
