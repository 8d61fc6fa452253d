"""Dilated neighborhood attention (DiNAT's attention): the op, its layer, and its backends.

`na2d` computes, for every query of a [batch, heads, height, width, head_dim] map,
softmax(scale * q.k + rpb) over its kernel_size x kernel_size (dilated) neighbourhood,
applied to the values, with the window and bias indexing of natten <= 0.17 (what the
published DiNAT checkpoints were trained with).

Backends (one file each, the protocol of backend_dispatch.py; each na2d takes
(query, key, value, kernel_size, dilation, rpb, scale, attn_drop)), in the order "auto" asks them:
  natten  na_natten.py  natten >= 0.20's fused CUDA kernels; those have no relative positional
                        bias and no attention dropout, so they only serve calls without either.
  flex    na_flex.py    torch.nn.attention.flex_attention with a neighbourhood block mask and
                        the bias as a score_mod; picked where it is fused (compiled), on CUDA.
  export  na_export.py  standard tensor ops only; "auto" passes it over (it declines automatic
                        picks); the dispatcher picks it for every call while a graph is exported.
  torch   na_torch.py   pure PyTorch, blocked; exact everywhere, supports attention dropout.
So "auto" gives torch on CPU and with attention dropout, and on CUDA natten for bias-free
calls, flex for biased ones. A backend is forced by the `na_backend(...)` context manager,
the `backend=` argument (the module's / config's MODEL.DINAT.NA_BACKEND) or $M2F_NA_BACKEND,
first to last; a forced backend that cannot serve a call raises ValueError saying why.
Arguments are checked once, by `check_na_args`, before any backend sees them.
"""
import torch
from torch import nn

from . import na_export, na_flex, na_natten, na_torch
from .backend_dispatch import BackendDispatcher, exporting

__all__ = [
    "BACKENDS",
    "DISPATCHER",
    "ENV_VAR",
    "NeighborhoodAttention2D",
    "check_na_args",
    "check_window",
    "describe_backends",
    "na2d",
    "na_backend",
    "select_backend",
]

ENV_VAR = "M2F_NA_BACKEND"
# The order "auto" asks the backends in; adding a backend is adding its line.
BACKENDS = (
    na_natten,
    na_flex,
    na_export,
    na_torch,
)
DISPATCHER = BackendDispatcher("neighborhood-attention", ENV_VAR, BACKENDS, context="na_backend()",
                               export_backend=na_export.NAME)


def na_backend(name: str):
    """Context manager forcing the backend of every na2d call inside the block ("auto" restores the choice)."""
    return DISPATCHER.force(name)


def select_backend(query: torch.Tensor, rpb: torch.Tensor | None = None, backend: str | None = None,
                   attn_drop: float = 0.0, needs_backward: bool = False) -> tuple[str, str]:
    """(backend name, why) for a call with this query/rpb, attention dropout probability actually
    applied (0 outside training) and need for a backward; `backend` is the caller's request.
    Raises ValueError if a forced backend cannot serve the call."""
    return DISPATCHER.select(query, rpb, attn_drop, needs_backward, backend=backend)


def describe_backends() -> str:
    """Human-readable summary for bug reports: availability of each backend and what auto picks."""
    rpb = torch.empty(1, 1, 1)
    examples = [("cpu", (torch.empty(1, 1, 1, 1, 32), rpb, 0.0, False))]
    if torch.cuda.is_available():
        query = torch.empty(1, 1, 1, 1, 32, device="cuda", dtype=torch.float16)
        examples += [("cuda with rpb", (query, rpb, 0.0, False)), ("cuda without rpb", (query, None, 0.0, False))]
    text = DISPATCHER.describe(examples)
    return text if torch.cuda.is_available() else text + "\n  auto on cuda: no CUDA device visible"


def check_window(kernel_size, dilation):
    """Raise ValueError unless kernel_size is an odd integer >= 3 and dilation an integer >= 1."""
    if not isinstance(kernel_size, int) or kernel_size < 2 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an integer >= 1, got {dilation!r}")


def check_na_args(query, key, value, kernel_size, dilation, rpb, attn_drop=0.0):
    """Validate na2d's arguments; raises ValueError naming the problem."""
    check_window(kernel_size, dilation)
    if not 0.0 <= attn_drop <= 1.0:
        raise ValueError(f"attn_drop must be a probability in [0, 1], got {attn_drop!r}")
    for name, t in (("query", query), ("key", key), ("value", value)):
        if t.dim() != 5:
            raise ValueError(f"{name} must be [batch, heads, height, width, head_dim], got shape {tuple(t.shape)}")
    if key.shape != query.shape or value.shape != query.shape:
        raise ValueError(
            f"query, key and value must have the same shape, got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(value.shape)}"
        )
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(f"query, key and value must share a dtype, got {query.dtype}, {key.dtype}, {value.dtype}")
    height, width = query.shape[2:4]
    span = kernel_size * dilation
    if height < span or width < span:
        raise ValueError(
            f"input map {height}x{width} is smaller than kernel_size*dilation = {kernel_size}*{dilation} = {span} "
            f"on an axis; pad it to at least {span}x{span} (NeighborhoodAttention2D does this)"
        )
    if rpb is not None:
        expected = (query.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1)
        if tuple(rpb.shape) != expected:
            raise ValueError(f"rpb must be [heads, 2k-1, 2k-1] = {list(expected)}, got {list(rpb.shape)}")


def na2d(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int = 1,
         rpb: torch.Tensor | None = None, scale: float | None = None, *, backend: str | None = None,
         attn_drop: float = 0.0, training: bool = False) -> torch.Tensor:
    """Dilated neighborhood attention.

    query/key/value: [batch, heads, height, width, head_dim]; rpb: [heads, 2k-1, 2k-1] or None
    (added to the logits unscaled); scale defaults to head_dim ** -0.5. Returns
    [batch, heads, height, width, head_dim]. `attn_drop` (dropout on the attention
    probabilities, applied only when `training`) is served by the torch backend only.
    """
    check_na_args(query, key, value, kernel_size, dilation, rpb, attn_drop)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    attn_drop = attn_drop if training else 0.0
    needs_backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, rpb))
    name, _ = select_backend(query, rpb, backend, attn_drop, needs_backward)
    return DISPATCHER.backend(name).na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop)


class NeighborhoodAttention2D(nn.Module):
    """DiNAT's attention layer on [batch, height, width, dim] maps (natten 0.14 module semantics).

    Inputs smaller than kernel_size*dilation on an axis are zero-padded on the bottom/right
    before the qkv projection and cropped back after attention, as natten 0.14 did.

    Args:
        dim: channels of the input and output.
        num_heads: attention heads; must divide dim.
        kernel_size: side of each query's neighbourhood; odd, >= 3.
        dilation: step between neighbours, >= 1.
        qkv_bias: whether the qkv projection has a bias.
        qk_scale: logit scale; None means head_dim ** -0.5.
        attn_drop: dropout probability on the attention probabilities (training only).
        proj_drop: dropout probability after the output projection.
        rel_pos_bias: whether to learn a relative positional bias `rpb` [num_heads, 2k-1, 2k-1].
        backend: neighborhood-attention backend ("auto"/None, "natten", "flex", "torch").
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dilation: int = 1, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 rel_pos_bias: bool = True, backend: str | None = None):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        check_window(kernel_size, dilation)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = DISPATCHER.check_choice(backend, "NeighborhoodAttention2D(backend=...)")
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"NeighborhoodAttention2D expects [batch, height, width, dim], got {tuple(x.shape)}")
        batch, height, width, dim = x.shape
        span = self.kernel_size * self.dilation
        # while exporting, pad and crop unconditionally by a symbolic amount (0 where nothing is
        # missing), so that a graph exported at one size stays right at sizes on either side of span
        export = exporting()
        pad_h, pad_w = torch.sym_max(0, span - height), torch.sym_max(0, span - width)
        if export or pad_h or pad_w:
            x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        padded_h, padded_w = x.shape[1:3]
        qkv = self.qkv(x).reshape(batch, padded_h, padded_w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each [B, heads, H, W, head_dim]
        out = na2d(q, k, v, self.kernel_size, self.dilation, self.rpb, self.scale, backend=self.backend,
                   attn_drop=self.attn_drop, training=self.training)
        out = out.permute(0, 2, 3, 1, 4).reshape(batch, padded_h, padded_w, dim)
        if export or pad_h or pad_w:
            out = out[:, :height, :width]
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, rel_pos_bias={self.rpb is not None}, backend={self.backend or 'auto'}")
