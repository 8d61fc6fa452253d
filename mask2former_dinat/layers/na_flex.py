"""Neighborhood attention through torch.nn.attention.flex_attention.

The neighbourhood becomes a block mask (mask_mod from the window formula) and the relative
positional bias a score_mod, so this works with the published weights. Compiled (fused) on
CUDA; eager elsewhere, where it materialises the full score matrix (tests only).

A fused kernel does work for every (query block, key block) pair its block mask schedules,
so the token order decides how much of it is wasted. Tokens are ordered by dilation group,
and inside each group by 2D tiles of BLOCK_SIZE tokens (one tile = one block, groups padded
to whole tiles): a tile's neighbourhoods then cover few key tiles. The tile shape (or plain
row-major for groups barely larger than the kernel) is chosen per call shape by counting the
scheduled blocks (`block_counts`, also what tools/benchmark_na.py --flex-blocks reports).
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

# Query and key block of the block mask, and the tile size of the token order. 64 is the
# fused kernel's own tile for DiNAT's head_dim 32 (torch 2.14 picks BLOCK_M = BLOCK_N = 64 for
# head_dim 32 on A100/H100/H200, where no per-GPU entry exists), so it costs no kernel
# efficiency against 128, while a 64-token tile's neighbourhoods cover far fewer key tokens
# per query than a 128-token one's. torch 2.14 shrinks its default kernel tiles to fit
# power-of-two sparse blocks >= 16.
BLOCK_SIZE = 64


NAME = "flex"


def availability():
    if flex_attention is None:
        return False, f"torch.nn.attention.flex_attention not importable ({_IMPORT_ERROR})"
    return True, f"torch {torch.__version__} flex_attention (compiled on CUDA, eager elsewhere)"


def unsupported(query, rpb, attn_drop, needs_backward=False, automatic=False):
    """Why flex cannot serve this call, or None (the backend protocol is in backend_dispatch.py)."""
    if flex_attention is None:
        return f"flex_attention is not importable ({_IMPORT_ERROR})"
    if attn_drop:
        return "flex_attention has no attention dropout"
    if needs_backward and not query.is_cuda:
        return f"flex_attention has no backward on {query.device.type} (torch {torch.__version__})"
    if automatic and not query.is_cuda:
        return f"on {query.device.type} flex_attention is unfused (full score matrices), slower than torch's"
    return None


def _ceil_div(a, b):
    return -(-a // b)


class TokenOrder:
    """Tiled group-major token order of a [height, width] map under dilation d.

    Dilation group (gy, gx) holds the positions (iy * d + gy, ix * d + gx); its (iy, ix) grid
    is padded to m x n, whole multiples of the tile (th, tw), and cut into tiles, and tokens
    are ordered (group, tile row, tile column, row in tile, column in tile), each group's run
    padded at its end to a multiple of `align` tokens. Every group and every tile is then a
    contiguous run; with th * tw = align = the block size every block is one tile of one
    group. tile=None is one tile per group row, i.e. row-major inside a group; with align=1
    that is the order this backend used before tiling (kept for comparison). Padded tokens
    attend to nothing and are never keys; their outputs are dropped.
    """

    def __init__(self, height, width, kernel_size, dilation, tile=None, align=1):
        self.height, self.width, self.k, self.d = height, width, kernel_size, dilation
        rows, cols = _ceil_div(height, dilation), _ceil_div(width, dilation)  # longest group
        self.tile = (1, cols) if tile is None else tuple(tile)
        th, tw = self.tile
        self.m, self.n = _ceil_div(rows, th) * th, _ceil_div(cols, tw) * tw
        self.align = align
        self.stride = _ceil_div(self.m * self.n, align) * align  # tokens per group, padding included

    @property
    def key(self):
        """Arguments that rebuild this order (hashable)."""
        return self.height, self.width, self.k, self.d, self.tile, self.align

    @property
    def label(self):
        """Short description: '8x8 tiles', 'row-major' (groups padded to blocks) or 'row-major, packed'."""
        if self.tile == (1, self.n):
            return "row-major" if self.align > 1 else "row-major, packed"
        return "{}x{} tiles".format(*self.tile)

    @property
    def length(self):
        return self.d * self.d * self.stride

    def coords(self, idx):
        """Map coordinates (y, x) of token indices (padding lies at y >= height or x >= width)."""
        th, tw = self.tile
        group, inner = idx // self.stride, idx % self.stride
        tile, within = inner // (th * tw), inner % (th * tw)
        iy = (tile // (self.n // tw)) * th + within // tw
        ix = (tile % (self.n // tw)) * tw + within % tw
        return iy * self.d + group // self.d, ix * self.d + group % self.d

    def window(self, pos, length):
        """(dilation group, window start in group units) of map position `pos` on an axis of
        `length`: its neighbours are (start + j) * d + group for j < k (NOTES.md)."""
        group, index = pos % self.d, pos // self.d
        group_length = (length - group + self.d - 1) // self.d
        return group, torch.minimum(torch.clamp(index - self.k // 2, min=0), group_length - self.k)

    def mask_mod(self):
        def mask_mod(b, h, q_idx, kv_idx):
            qy, qx = self.coords(q_idx)
            ky, kx = self.coords(kv_idx)
            inside = (qy < self.height) & (qx < self.width) & (ky < self.height) & (kx < self.width)
            for q, kk, length in ((qy, ky, self.height), (qx, kx, self.width)):
                group, start = self.window(q, length)
                index = kk // self.d
                inside = inside & (kk % self.d == group) & (index >= start) & (index < start + self.k)
            return inside
        return mask_mod

    def score_mod(self, rpb):
        top = 2 * self.k - 2

        def score_mod(score, b, h, q_idx, kv_idx):
            qy, qx = self.coords(q_idx)
            ky, kx = self.coords(kv_idx)
            # outside the window the mask drops the score; clamping keeps the lookup in bounds
            dy = (ky // self.d - qy // self.d + self.k - 1).clamp(0, top)
            dx = (kx // self.d - qx // self.d + self.k - 1).clamp(0, top)
            return score + rpb[h, dy, dx]
        return score_mod

    def to_tokens(self, t):
        """[B, heads, H, W, D] -> [B, heads, tokens, D] in this order."""
        batch, heads, _, _, dim = t.shape
        (th, tw), d = self.tile, self.d
        t = torch.nn.functional.pad(t, (0, 0, 0, self.n * d - self.width, 0, self.m * d - self.height))
        # y = (tile row * th + row in tile) * d + gy, x likewise
        t = t.view(batch, heads, self.m // th, th, d, self.n // tw, tw, d, dim)
        t = t.permute(0, 1, 4, 7, 2, 5, 3, 6, 8)  # (gy, gx, tile row, tile column, row, column)
        t = t.reshape(batch, heads, d * d, self.m * self.n, dim)
        t = torch.nn.functional.pad(t, (0, 0, 0, self.stride - self.m * self.n))
        return t.reshape(batch, heads, self.length, dim)

    def from_tokens(self, t):
        """Inverse of to_tokens, dropping the padding."""
        batch, heads, _, dim = t.shape
        (th, tw), d = self.tile, self.d
        t = t.view(batch, heads, d * d, self.stride, dim)[:, :, :, : self.m * self.n]
        t = t.reshape(batch, heads, d, d, self.m // th, self.n // tw, th, tw, dim)
        t = t.permute(0, 1, 4, 6, 2, 5, 7, 3, 8)
        return t.reshape(batch, heads, self.m * d, self.n * d, dim)[:, :, : self.height, : self.width]


def block_counts(order, block_size=BLOCK_SIZE):
    """(useful, scheduled) work of `order`'s block mask with square blocks of `block_size`.

    useful: real (query, neighbour) pairs, height * width * k * k. scheduled: the non-empty
    (query block, key block) pairs times block_size ** 2, what a fused kernel computes. Found
    by listing every real query's neighbours (from TokenOrder.window) and their tokens (from
    TokenOrder.coords), so it costs height * width * k * k, not tokens ** 2; it agrees with
    create_block_mask on mask_mod (tests/layers/test_na_flex.py).
    """
    height, width, k = order.height, order.width, order.k
    tokens = torch.arange(order.length)
    y, x = order.coords(tokens)
    real = (y < height) & (x < width)
    where = torch.empty(height, width, dtype=torch.long)
    where[y[real], x[real]] = tokens[real]

    def neighbours(length):
        pos = torch.arange(length)
        group, start = order.window(pos, length)
        return (start[:, None] + torch.arange(k)) * order.d + group[:, None]  # [length, k]

    rows, cols = neighbours(height), neighbours(width)
    blocks = _ceil_div(order.length, block_size)
    scheduled = torch.zeros(blocks, blocks, dtype=torch.bool)  # blocks ** 2 bytes: 16 MB at a 2048 input
    step = max(1, 2 ** 22 // (width * k * k))  # query rows at a time: bounded memory
    for y0 in range(0, height, step):
        ys = torch.arange(y0, min(height, y0 + step))
        kv = where[rows[ys][:, None, :, None], cols[None, :, None, :]] // block_size  # [rows, W, k, k]
        q = (where[ys] // block_size)[:, :, None, None].expand_as(kv)
        scheduled[q, kv] = True
    return height * width * k * k, int(scheduled.sum()) * block_size * block_size


def candidate_orders(height, width, kernel_size, dilation, block_size=BLOCK_SIZE):
    """The orders the backend picks from for blocks of `block_size` tokens: 2D tiles of one
    block (rows x columns: 16x4, 8x8, 4x16, 2x32 for 64); row-major inside each group with
    every group padded to whole blocks (best where groups are barely larger than k, e.g.
    dilation 14 at stage 1 of a 1024 input); and row-major groups packed without padding
    (the order before tiling; best where a group is much smaller than a block)."""
    shapes = [(block_size // w, w) for w in (4, 8, 16, 32) if block_size % w == 0 and block_size // w >= 2]
    orders = [TokenOrder(height, width, kernel_size, dilation, tile, align=block_size) for tile in shapes + [None]]
    return orders + [TokenOrder(height, width, kernel_size, dilation)]


@functools.lru_cache(maxsize=256)
def token_order(height, width, kernel_size, dilation, block_size=BLOCK_SIZE):
    """The candidate order whose block mask schedules the least work (then: fewest tokens)."""
    return min(candidate_orders(height, width, kernel_size, dilation, block_size),
               key=lambda order: (block_counts(order, block_size)[1], order.length))


@functools.lru_cache(maxsize=64)
def _block_mask(order_key: tuple, block_size: int, device: str):
    tokens = TokenOrder(*order_key)
    return create_block_mask(tokens.mask_mod(), B=None, H=None, Q_LEN=tokens.length, KV_LEN=tokens.length,
                             device=device, BLOCK_SIZE=block_size, _compile=device.startswith("cuda"))


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def attend(query, key, value, tokens, rpb=None, scale=None, block_size=BLOCK_SIZE):
    """na2d in the given TokenOrder with blocks of block_size (na2d picks both; tests force them)."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    q, k, v = (tokens.to_tokens(t) for t in (query, key, value))
    if not torch.is_grad_enabled():
        # flex refuses CPU inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    score_mod = None if rpb is None else tokens.score_mod(rpb.to(query.dtype))
    run = _compiled_flex() if query.is_cuda else flex_attention
    mask = _block_mask(tokens.key, block_size, str(query.device))
    return tokens.from_tokens(run(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale))


def na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop):
    """Same contract as na_torch.na2d; attn_drop is 0 (unsupported() refuses dropout)."""
    height, width = query.shape[2:4]
    return attend(query, key, value, token_order(height, width, kernel_size, dilation), rpb, scale)
