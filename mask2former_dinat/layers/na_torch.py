"""Pure-PyTorch dilated neighborhood attention: blocked, memory-bounded, exact.

How it works:
- Dilation: position i of an axis belongs to dilation group i mod d; each group is an
  undilated neighborhood attention over the sub-map of every d-th position. Per axis the
  group lengths differ by at most one, so the groups form at most 2 x 2 sets of equal
  sub-map size, and the groups of a set are batched together.
- Undilated NA on a sub-map: the queries are tiled into ty x tx blocks. All windows of a
  block lie inside a region of at most (ty+k-1) x (tx+k-1) keys (window starts are clamped
  to the map), so a block's logits are one batched matmul against its region plus a bias
  table holding rpb[offset] for true neighbours and -inf elsewhere. Blocks with the same
  window pattern (all interior blocks, for instance) share one table.
- q/k/v are never rearranged: every tensor is read and written as rows of head_dim values
  addressed through its own strides, with index_select / index_copy_ / index_add_ on
  precomputed row indices. The output is laid out [batch, height, width, heads, head_dim]
  so the module's projection needs no copy.
- Work goes in chunks of blocks sized to stay in cache, so memory beyond inputs and outputs
  is one chunk of logits. Gradients come from a custom autograd function that recomputes
  each chunk's probabilities (flash-attention style), so backward memory is bounded too.
  With attention dropout the same chunks run under plain autograd instead.
"""
import functools

import torch

# Query tile side and chunk budget (logit elements per chunk), picked with tools/benchmark_na.py on
# a 2-core CPU: 8x8 tiles where sub-maps are small (fewer chunks, less Python overhead), 6x6 on
# sub-map axes of LARGE_AXIS or more (less wasted work against the -inf region). On CUDA bigger
# chunks amortise launch overhead.
TILE, TILE_LARGE_AXIS, LARGE_AXIS = 8, 6, 96
CPU_CHUNK_ELEMENTS = 1 << 19
CUDA_CHUNK_ELEMENTS = 1 << 25


NAME = "torch"


def availability():
    return True, "pure PyTorch blocked kernel: every device and dtype, attention dropout supported"


def unsupported(query, rpb, attn_drop, needs_backward=False, automatic=False):
    """Serves every call (the backend protocol is in backend_dispatch.py)."""
    return None


def _tile_size(length: int, target: int) -> int:
    """Tile length <= target that splits `length` into the fewest, most even tiles."""
    tiles = -(-length // target)
    return -(-length // tiles)


def _axis_blocks(length: int, kernel_size: int, tile: int):
    """Per-axis tiling of an undilated NA. Tensors (CPU, long):
    query_pos [tiles, tile] (past-the-end queries clamped onto the last real one),
    key_pos [tiles, region], real [tiles, tile], offsets [patterns, tile, region] (bias index
    0..2k-2, or -1 where the key is not in the query's window), pattern [tiles] (index into offsets).
    """
    region = min(tile + kernel_size - 1, length)
    tiles = -(-length // tile)
    q = torch.arange(tiles * tile).view(tiles, tile)
    real = q < length
    q = q.clamp(max=length - 1)
    start = (q - kernel_size // 2).clamp(0, length - kernel_size)
    region_start = torch.minimum(start[:, 0], torch.tensor(length - region))
    key_pos = region_start[:, None] + torch.arange(region)
    inside = (key_pos[:, None, :] >= start[:, :, None]) & (key_pos[:, None, :] < start[:, :, None] + kernel_size)
    offset = torch.where(inside, key_pos[:, None, :] - q[:, :, None] + kernel_size - 1, -1)
    offsets, pattern = torch.unique(offset.flatten(1), dim=0, return_inverse=True)
    return q, key_pos, real, offsets.view(-1, tile, region), pattern


class _Plan:
    """Blocked, undilated NA over an [ly, lx] sub-map: block coordinates, bias patterns, chunks."""

    def __init__(self, ly: int, lx: int, kernel_size: int, device):
        self.ly, self.lx = ly, lx
        self.ty, self.tx = (_tile_size(n, TILE_LARGE_AXIS if n >= LARGE_AXIS else TILE) for n in (ly, lx))
        qy, ky, realy, offy, row_pattern = _axis_blocks(ly, kernel_size, self.ty)
        qx, kx, realx, offx, col_pattern = _axis_blocks(lx, kernel_size, self.tx)
        self.nby, self.nbx = qy.shape[0], qx.shape[0]
        self.t, self.r = self.ty * self.tx, ky.shape[1] * kx.shape[1]

        def grid(y, x):  # [nby, ty or ry] x [nbx, tx or rx] -> y, x coordinates [nby, nbx, T or R]
            shape = (self.nby, self.nbx, y.shape[1] * x.shape[1])
            return (y[:, None, :, None].expand(-1, self.nbx, -1, x.shape[1]).reshape(shape).to(device),
                    x[None, :, None, :].expand(self.nby, -1, y.shape[1], -1).reshape(shape).to(device))

        self.query_yx = grid(qy, qx)
        self.key_yx = grid(ky, kx)
        self.real = (realy[:, None, :, None] & realx[None, :, None, :]).reshape(self.nby, self.nbx, -1).to(device)
        # one [T, R] bias pattern per (row pattern, column pattern): flat index into rpb[h].flatten()
        # and neighbour mask, shapes [row patterns, column patterns, T, R]
        width = 2 * kernel_size - 1
        py = offy[:, None, :, None, :, None]
        px = offx[None, :, None, :, None, :]
        shape = (len(offy), len(offx), self.t, self.r)
        valid = ((py >= 0) & (px >= 0)).reshape(shape)
        index = (py.clamp(min=0) * width + px.clamp(min=0)).reshape(shape)
        self.not_neighbour = width * width  # the -inf entry appended to each head's flattened rpb
        self.bias_index = torch.where(valid, index, self.not_neighbour).to(device)
        self._masks = {}
        self.row_pattern = row_pattern.tolist()
        # maximal runs of tile columns sharing a pattern: [first, end, pattern]
        self.col_runs = []
        for bx, p in enumerate(col_pattern.tolist()):
            if self.col_runs and self.col_runs[-1][2] == p:
                self.col_runs[-1][1] = bx + 1
            else:
                self.col_runs.append([bx, bx + 1, p])

    def mask(self, dtype):
        """[row patterns, column patterns, T, R]: 0 at neighbours, -inf elsewhere."""
        if dtype not in self._masks:
            zeros = torch.zeros((), dtype=dtype, device=self.bias_index.device)
            self._masks[dtype] = torch.where(self.bias_index == self.not_neighbour, float("-inf"), zeros)
        return self._masks[dtype]

    def chunks(self, heads: int, batch: int, budget: int):
        """Yield (tile row, tile-column slice, head slice, batch slice, (row pattern, column pattern))
        covering all blocks; each chunk has one bias pattern and at most ~budget logits."""
        per_block = self.t * self.r
        for by in range(self.nby):
            for x0, x1, px in self.col_runs:
                n = x1 - x0
                bx_step = max(1, min(n, budget // per_block))
                b_step = max(1, min(batch, budget // (per_block * bx_step))) if bx_step == n else 1
                h_step = max(1, min(heads, budget // (per_block * bx_step * b_step))) if b_step == batch else 1
                for h0 in range(0, heads, h_step):
                    for b0 in range(0, batch, b_step):
                        for c0 in range(x0, x1, bx_step):
                            yield (by, slice(c0, min(x1, c0 + bx_step)), slice(h0, min(heads, h0 + h_step)),
                                   slice(b0, min(batch, b0 + b_step)), (self.row_pattern[by], px))


def _group_sets(length: int, dilation: int):
    """Dilation groups of an axis in sets of equal sub-map length: [(first group, end group, length)]."""
    longest = -(-length // dilation)
    full = length - (longest - 1) * dilation  # groups with the longest sub-map
    sets = [(0, full, longest)]
    if full < dilation:
        sets.append((full, dilation, longest - 1))
    return sets


@functools.lru_cache(maxsize=128)
def _layout(height, width, kernel_size, dilation, device):
    """[(plan, (gy0, gy1), (gx0, gx1))] for every set of equal-size dilation groups."""
    plans = {}
    layout = []
    for gy0, gy1, ly in _group_sets(height, dilation):
        for gx0, gx1, lx in _group_sets(width, dilation):
            if (ly, lx) not in plans:
                plans[ly, lx] = _Plan(ly, lx, kernel_size, device)
            layout.append((plans[ly, lx], (gy0, gy1), (gx0, gx1)))
    return layout


class _Rows:
    """A [batch, heads, height, width, D] tensor seen as rows of D values through its strides.

    `rows` is a [n, D] view of the storage (plus one scratch row at the end when `scratch`), and
    row (b, h, y, x) is b*sb + h*sh + y*sy + x*sx. Blocks of a dilation set are addressed with
    base(head, (b, gy, gx)) + ay*(d*sy) + ax*(d*sx) for sub-map coordinates (ay, ax).
    """

    def __init__(self, t: torch.Tensor, dilation: int):
        dim = t.shape[-1]
        strided_ok = t.stride(-1) == 1 and not any(s % dim for s in t.stride()[:4])
        if not strided_ok or (t.requires_grad and torch.is_grad_enabled()):
            t = t.contiguous()  # under autograd, a plain view keeps as_strided's backward cheap
        self.tensor = t
        self.strides = [s // dim for s in t.stride()[:4]]
        span = sum((n - 1) * s for n, s in zip(t.shape[:4], self.strides)) + 1
        self.rows = t.as_strided((span, dim), (dim, 1), t.storage_offset())
        self.dilation = dilation
        self.device = t.device

    @classmethod
    def new(cls, shape, dilation, dtype, device, heads_last=False, scratch=False, zero=True):
        """Rows for a new [B, heads, H, W, D] tensor (stored [B, H, W, heads, D] if heads_last),
        with a scratch row after the last (a dump for past-the-end queries) if `scratch`."""
        b, h, y, x, d = shape
        storage = (torch.zeros if zero else torch.empty)(b * h * y * x + int(scratch), d, dtype=dtype, device=device)
        if heads_last:
            t = storage[: b * h * y * x].view(b, y, x, h, d).permute(0, 3, 1, 2, 4)
        else:
            t = storage[: b * h * y * x].view(shape)
        rows = cls(t, dilation)
        rows.rows = storage
        return rows

    def base(self, batch: int, heads: int, gy: tuple, gx: tuple) -> torch.Tensor:
        """[heads, batch * groups] first row of each (batch, head, group) of a dilation set."""
        sb, sh, sy, sx = self.strides
        arange = functools.partial(torch.arange, device=self.device)
        base = (arange(heads)[:, None, None, None] * sh + arange(batch)[None, :, None, None] * sb
                + arange(*gy)[None, None, :, None] * sy + arange(*gx)[None, None, None, :] * sx)
        return base.reshape(heads, -1)

    def offsets(self, yx) -> torch.Tensor:
        """Row offsets of sub-map coordinates (y, x) tensors."""
        _, _, sy, sx = self.strides
        return yx[0] * (sy * self.dilation) + yx[1] * (sx * self.dilation)


def _acc(t: torch.Tensor) -> torch.dtype:
    """Dtype for logits, softmax and accumulation: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _bias_tables(plan, rpb, heads, dtype, device):
    """[heads or 1, row patterns, column patterns, T, R]: rpb (or 0) at neighbours, -inf elsewhere."""
    if rpb is None:
        return plan.mask(dtype)[None]
    # one extra -inf entry per head, which every non-neighbour points at
    table = torch.cat([rpb.to(dtype).flatten(1), rpb.new_full((heads, 1), float("-inf"), dtype=dtype)], 1)
    return table.index_select(1, plan.bias_index.flatten()).view(heads, *plan.bias_index.shape)


class _Indexer:
    """Row indices of one dilation set's chunks in a _Rows tensor."""

    def __init__(self, rows: _Rows, plan: _Plan, batch: int, heads: int, gy, gx, query_side: bool):
        self.rows = rows
        self.base = rows.base(batch, heads, gy, gx)
        self.block = rows.offsets(plan.query_yx if query_side else plan.key_yx)

    def index(self, chunk):
        by, xs, hs, bs, _ = chunk
        return (self.base[hs, bs].reshape(-1, 1) + self.block[by, xs].reshape(1, -1)).flatten()

    def gather(self, chunk):
        """[h, b, n, T or R, D] rows of a chunk's blocks (a copy)."""
        _, xs, hs, bs, _ = chunk
        index = self.index(chunk)
        shape = (hs.stop - hs.start, bs.stop - bs.start, xs.stop - xs.start, -1, self.rows.rows.shape[-1])
        return self.rows.rows.index_select(0, index).view(shape)


class _SetContext:
    """Everything a dilation set's chunk loop needs: plan, bias tables and row indexers."""

    def __init__(self, plan, gy, gx, rpb, batch, heads, acc, device):
        self.plan = plan
        self.groups = batch * (gy[1] - gy[0]) * (gx[1] - gx[0])
        self.tables = _bias_tables(plan, rpb, heads, acc, device)
        self.args = (plan, batch, heads, gy, gx)

    def queries(self, rows):
        return _Indexer(rows, *self.args, query_side=True)

    def keys(self, rows):
        return _Indexer(rows, *self.args, query_side=False)

    def output_index(self, indexer, chunk, scratch_row):
        """Query row indices with past-the-end queries sent to the scratch row."""
        by, xs, _, _, _ = chunk
        index = indexer.index(chunk).view(-1, self.plan.t * (xs.stop - xs.start))
        return torch.where(self.plan.real[by, xs].reshape(1, -1), index, scratch_row).flatten()

    def probs(self, chunk, q, k, scale):
        """Attention probabilities (float32/64) of a chunk [h, b, n, T, R], and its scaled q and k blocks."""
        _, _, hs, _, pattern = chunk
        qb = q.gather(chunk).mul_(scale)
        kb = k.gather(chunk)
        logits = torch.matmul(qb, kb.transpose(-1, -2)).to(self.tables.dtype)
        tables = self.tables if self.tables.shape[0] == 1 else self.tables[hs]
        logits += tables[:, pattern[0], pattern[1], None, None]
        return torch.softmax(logits, -1), qb, kb


def _sets(query, rpb, kernel_size, dilation):
    batch, heads, height, width, _ = query.shape
    for plan, gy, gx in _layout(height, width, kernel_size, dilation, query.device):
        yield _SetContext(plan, gy, gx, rpb, batch, heads, _acc(query), query.device)


def _budget(t: torch.Tensor) -> int:
    return CUDA_CHUNK_ELEMENTS if t.is_cuda else CPU_CHUNK_ELEMENTS


def _forward(query, key, value, rpb, kernel_size, dilation, scale, dropout_p=0.0):
    """NA forward over [B, heads, H, W, D] tensors; the result is stored [B, H, W, heads, D].
    Differentiable when run under autograd (the dropout path)."""
    batch, heads = query.shape[:2]
    q, k, v = (_Rows(t, dilation) for t in (query, key, value))
    # every real query belongs to exactly one block, so every output row gets written
    out = _Rows.new(query.shape, dilation, query.dtype, query.device, heads_last=True, scratch=True, zero=False)
    scratch_row = out.rows.shape[0] - 1
    for ctx in _sets(query, rpb, kernel_size, dilation):
        qi, ki, vi, oi = ctx.queries(q), ctx.keys(k), ctx.keys(v), ctx.queries(out)
        for chunk in ctx.plan.chunks(heads, ctx.groups, _budget(query)):
            probs, _, _ = ctx.probs(chunk, qi, ki, scale)
            if dropout_p > 0:
                probs = torch.nn.functional.dropout(probs, dropout_p, True)
            ob = torch.matmul(probs.to(value.dtype), vi.gather(chunk))
            out.rows.index_copy_(0, ctx.output_index(oi, chunk, scratch_row), ob.reshape(-1, ob.shape[-1]))
    if dropout_p > 0:  # under autograd: the result must come from the storage index_copy_ recorded
        return out.rows[:scratch_row].view(batch, query.shape[2], query.shape[3], heads, -1).permute(0, 3, 1, 2, 4)
    return out.tensor


def _backward(grad_out, query, key, value, out, rpb, kernel_size, dilation, scale):
    """(dq, dk, dv, drpb) of the NA, probabilities recomputed chunk by chunk."""
    heads = query.shape[1]
    acc = _acc(query)
    q, k, v, do = (_Rows(t, dilation) for t in (query, key, value, grad_out))
    delta = _Rows((grad_out.to(acc) * out.to(acc)).sum(-1, keepdim=True), dilation)
    dq = _Rows.new(query.shape, dilation, acc, query.device, scratch=True)
    dk = _Rows.new(key.shape, dilation, acc, query.device)
    dv = _Rows.new(value.shape, dilation, acc, query.device)
    # one extra column collects the (zero) gradient of non-neighbour entries
    drpb = None if rpb is None else torch.zeros(heads, rpb[0].numel() + 1, dtype=acc, device=query.device)
    scratch_row = dq.rows.shape[0] - 1
    for ctx in _sets(query, rpb, kernel_size, dilation):
        qi, ki, vi = ctx.queries(q), ctx.keys(k), ctx.keys(v)
        doi, deltai, dqi = ctx.queries(do), ctx.queries(delta), ctx.queries(dq)
        dkvi = ctx.keys(dk)  # dk and dv share a layout
        for chunk in ctx.plan.chunks(heads, ctx.groups, _budget(query)):
            by, xs, hs, _, pattern = chunk
            probs, qb, kb = ctx.probs(chunk, qi, ki, scale)
            # past-the-end (duplicated) queries must not contribute
            real = ctx.plan.real[by, xs, :, None]
            dob = doi.gather(chunk).to(acc) * real
            dv_b = torch.matmul(probs.transpose(-1, -2), dob)
            dp = torch.matmul(dob.to(value.dtype), vi.gather(chunk).transpose(-1, -2)).to(acc)
            ds = probs.mul_(dp.sub_(deltai.gather(chunk) * real))
            dq_b = torch.matmul(ds.to(key.dtype), kb).to(acc).mul_(scale)
            dk_b = torch.matmul(ds.transpose(-1, -2).to(query.dtype), qb).to(acc)
            dim = dq_b.shape[-1]
            key_index = dkvi.index(chunk)
            dk.rows.index_add_(0, key_index, dk_b.reshape(-1, dim))
            dv.rows.index_add_(0, key_index, dv_b.reshape(-1, dim))
            dq.rows.index_add_(0, ctx.output_index(dqi, chunk, scratch_row), dq_b.reshape(-1, dim))
            if drpb is not None:
                drpb[hs].index_add_(1, ctx.plan.bias_index[pattern].flatten(), ds.sum((1, 2)).flatten(1))
    grads = [g.tensor.to(t.dtype) for g, t in ((dq, query), (dk, key), (dv, value))]
    return (*grads, None if drpb is None else drpb[:, :-1].reshape(rpb.shape).to(rpb.dtype))


class _NeighborhoodAttention(torch.autograd.Function):
    """Exact NA with a backward that recomputes probabilities (bounded memory)."""

    @staticmethod
    def forward(ctx, query, key, value, rpb, kernel_size, dilation, scale):
        out = _forward(query, key, value, rpb, kernel_size, dilation, scale)
        ctx.save_for_backward(query, key, value, rpb, out)
        ctx.config = (kernel_size, dilation, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, rpb, out = ctx.saved_tensors
        grads = _backward(grad_out, query, key, value, out, rpb, *ctx.config)
        return (*grads, None, None, None)


def na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop):
    """Neighborhood attention on [batch, heads, height, width, head_dim] tensors (arguments as
    neighborhood_attention.na2d checked them; attn_drop > 0 applies dropout to the probabilities).

    Returns a [batch, heads, height, width, head_dim] view of a [batch, height, width, heads,
    head_dim] tensor.
    """
    if attn_drop > 0:
        return _forward(query, key, value, rpb, kernel_size, dilation, scale, dropout_p=attn_drop)
    return _NeighborhoodAttention.apply(query, key, value, rpb, kernel_size, dilation, scale)
