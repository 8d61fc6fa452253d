"""Neighborhood attention through torch.nn.attention.flex_attention.

The neighbourhood becomes a block mask (mask_mod from the window formula) and the relative
positional bias a score_mod, so this works with the published weights. Tokens are put in
dilation-group order first so the block mask stays sparse. Compiled (fused) on CUDA; eager
elsewhere, where it materialises the full score matrix (tests only).
"""
import functools

import torch

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError as exc:  # older torch
    flex_attention = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def availability():
    if flex_attention is None:
        return False, f"torch.nn.attention.flex_attention not importable ({_IMPORT_ERROR})"
    return True, f"torch {torch.__version__} flex_attention (compiled on CUDA, eager elsewhere)"


def unsupported(query, rpb, dropout, needs_backward=False):
    if flex_attention is None:
        return f"flex_attention is not importable ({_IMPORT_ERROR})"
    if dropout:
        return "flex_attention has no attention dropout"
    if needs_backward and not query.is_cuda:
        return f"flex_attention has no backward on {query.device.type} (torch {torch.__version__})"
    return None


class _TokenOrder:
    """Group-major token order of a [height, width] map under dilation d.

    The map is padded on the bottom/right to multiples of d and its tokens are ordered
    (group row, group column, row in group, column in group), so every dilation group is a
    contiguous run of tokens and the block mask stays sparse even for large dilations.
    Padded tokens are never keys; as queries they take the place of the real token d rows /
    columns above (same group), and their outputs are dropped.
    """

    def __init__(self, height, width, kernel_size, dilation):
        self.height, self.width, self.k, self.d = height, width, kernel_size, dilation
        self.m, self.n = -(-height // dilation), -(-width // dilation)  # group rows / columns

    @property
    def length(self):
        return self.d * self.d * self.m * self.n

    def coords(self, idx):
        """Map coordinates (y, x) of token indices."""
        group, inner = idx // (self.m * self.n), idx % (self.m * self.n)
        return (inner // self.n) * self.d + group // self.d, (inner % self.n) * self.d + group % self.d

    def window_start(self, pos, length):
        """Start of the window (in group units) of map position `pos` on an axis of `length`."""
        group, index = pos % self.d, pos // self.d
        group_length = (length - group + self.d - 1) // self.d
        return torch.minimum(torch.clamp(index - self.k // 2, min=0), group_length - self.k)

    def query_coords(self, idx):
        y, x = self.coords(idx)
        return (torch.where(y >= self.height, y - self.d, y), torch.where(x >= self.width, x - self.d, x))

    def mask_mod(self):
        def mask_mod(b, h, q_idx, kv_idx):
            qy, qx = self.query_coords(q_idx)
            ky, kx = self.coords(kv_idx)
            inside = (ky < self.height) & (kx < self.width)
            for q, kk, length in ((qy, ky, self.height), (qx, kx, self.width)):
                start = self.window_start(q, length)
                index = kk // self.d
                inside = inside & (kk % self.d == q % self.d) & (index >= start) & (index < start + self.k)
            return inside
        return mask_mod

    def score_mod(self, rpb):
        top = 2 * self.k - 2

        def score_mod(score, b, h, q_idx, kv_idx):
            qy, qx = self.query_coords(q_idx)
            ky, kx = self.coords(kv_idx)
            # outside the window the mask drops the score; clamping keeps the lookup in bounds
            dy = (ky // self.d - qy // self.d + self.k - 1).clamp(0, top)
            dx = (kx // self.d - qx // self.d + self.k - 1).clamp(0, top)
            return score + rpb[h, dy, dx]
        return score_mod

    def to_tokens(self, t):
        """[B, heads, H, W, D] -> [B, heads, tokens, D] in group-major order."""
        batch, heads, _, _, dim = t.shape
        t = torch.nn.functional.pad(t, (0, 0, 0, self.n * self.d - self.width, 0, self.m * self.d - self.height))
        t = t.view(batch, heads, self.m, self.d, self.n, self.d, dim).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(batch, heads, self.length, dim)

    def from_tokens(self, t):
        """Inverse of to_tokens, dropping the padding."""
        batch, heads, _, dim = t.shape
        t = t.view(batch, heads, self.d, self.d, self.m, self.n, dim).permute(0, 1, 4, 2, 5, 3, 6)
        return t.reshape(batch, heads, self.m * self.d, self.n * self.d, dim)[:, :, : self.height, : self.width]


@functools.lru_cache(maxsize=64)
def _block_mask(order: tuple, device: str):
    tokens = _TokenOrder(*order)
    return create_block_mask(tokens.mask_mod(), B=None, H=None, Q_LEN=tokens.length, KV_LEN=tokens.length,
                             device=device, _compile=device.startswith("cuda"))


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def na2d(query, key, value, kernel_size, dilation=1, rpb=None, scale=None):
    """Same contract as na_torch.na2d (layout [batch, heads, height, width, head_dim])."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    height, width = query.shape[2:4]
    order = (height, width, kernel_size, dilation)
    tokens = _TokenOrder(*order)
    q, k, v = (tokens.to_tokens(t) for t in (query, key, value))
    if not torch.is_grad_enabled():
        # flex refuses CPU inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    score_mod = None if rpb is None else tokens.score_mod(rpb.to(query.dtype))
    attend = _compiled_flex() if query.is_cuda else flex_attention
    out = attend(q, k, v, score_mod=score_mod, block_mask=_block_mask(order, str(query.device)), scale=scale)
    return tokens.from_tokens(out)
