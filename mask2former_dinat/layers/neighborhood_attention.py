"""Dilated neighborhood attention (DiNAT's attention) and the one place that picks its kernel.

`na2d` computes, for every query of a [batch, heads, height, width, head_dim] map,
softmax(scale * q.k + rpb) over its kernel_size x kernel_size (dilated) neighbourhood,
applied to the values, with the window and bias indexing of natten <= 0.17 (what the
published DiNAT checkpoints were trained with).

Backends (one file each, same call signature na2d(q, k, v, kernel_size, dilation, rpb, scale);
torch's also takes attn_drop):
  torch   na_torch.py   pure PyTorch, blocked; exact everywhere, supports attention dropout.
  flex    na_flex.py    torch.nn.attention.flex_attention with a neighbourhood block mask and
                        the bias as a score_mod; fused (compiled) on CUDA.
  natten  na_natten.py  natten >= 0.20's fused kernels; those have no relative positional bias,
                        so it only serves calls without rpb.

Attention dropout (attn_drop > 0 while training) is applied by the torch backend only: auto
then picks torch, and forcing flex or natten raises ValueError.

Which backend runs is decided by `select_backend` in this file and nowhere else. The
requested backend comes from, first to last: the `na_backend(...)` context manager, the
`backend=` argument (the module's / config's MODEL.DINAT.NA_BACKEND), the environment
variable M2F_NA_BACKEND; "auto" (or nothing) at every level means "let select_backend decide".
"""
import contextlib
import os
import threading

import torch
from torch import nn

from . import na_flex, na_natten, na_torch

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "NeighborhoodAttention2D",
    "describe_backends",
    "na2d",
    "na_backend",
    "select_backend",
]

ENV_VAR = "M2F_NA_BACKEND"
BACKENDS = {"torch": na_torch, "flex": na_flex, "natten": na_natten}
_CHOICES = ("auto",) + tuple(BACKENDS)

_state = threading.local()


def _check_choice(name: str | None, where: str) -> str | None:
    if name is None:
        return None
    name = str(name).lower()
    if name not in _CHOICES:
        raise ValueError(f"unknown neighborhood-attention backend {name!r} from {where}; choose one of {_CHOICES}")
    return name


@contextlib.contextmanager
def na_backend(name: str):
    """Force the backend of every na2d call inside the block ("auto" restores automatic choice)."""
    name = _check_choice(name, "na_backend()")
    previous = getattr(_state, "forced", None)
    _state.forced = name
    try:
        yield
    finally:
        _state.forced = previous


def requested_backend(backend: str | None = None) -> tuple[str, str]:
    """(requested name, where the request came from); name "auto" when nobody asked."""
    forced = getattr(_state, "forced", None)
    if forced not in (None, "auto"):
        return forced, "na_backend() context"
    backend = _check_choice(backend, "the backend argument")
    if backend not in (None, "auto"):
        return backend, "backend argument"
    env = _check_choice(os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")
    if env not in (None, "auto"):
        return env, f"${ENV_VAR}"
    return "auto", "default"


def _auto(query: torch.Tensor, rpb, dropout: bool, needs_backward: bool) -> tuple[str, str]:
    device = query.device
    if dropout:
        return "torch", "attention dropout is active and only the torch backend applies it"
    if device.type != "cuda":
        return "torch", (
            f"on {device.type} the blocked torch kernel is the fastest exact path; "
            "natten and flex only have unfused full-score code there"
        )
    fused, why_not = na_natten.has_fused_kernels(device)
    if rpb is None and fused and na_natten.unsupported(query, rpb, dropout, needs_backward) is None:
        return "natten", "CUDA tensors without relative positional bias: natten's fused kernels serve them exactly"
    problem = na_flex.unsupported(query, rpb, dropout, needs_backward)
    if problem is None:
        why = "with relative positional bias, which natten >= 0.20 lacks" if rpb is not None else (
            f"natten cannot serve it ({why_not if not fused else na_natten.unsupported(query, rpb, dropout, needs_backward)})")
        return "flex", f"CUDA tensors {why}: compiled flex_attention with a neighbourhood block mask"
    return "torch", f"CUDA tensors but flex_attention cannot serve them ({problem})"


def select_backend(query: torch.Tensor, rpb: torch.Tensor | None = None, backend: str | None = None,
                   dropout: bool = False, needs_backward: bool = False) -> tuple[str, str]:
    """Which backend serves a call with this query/rpb, and why.

    `backend` is the caller's request ("auto"/None, "torch", "flex", "natten"); the context
    manager and $M2F_NA_BACKEND are consulted as described in the module docstring.
    Raises ValueError if a forced backend cannot serve the call.
    """
    name, source = requested_backend(backend)
    if name == "auto":
        return _auto(query, rpb, dropout, needs_backward)
    problem = BACKENDS[name].unsupported(query, rpb, dropout, needs_backward)
    if problem is not None:
        raise ValueError(
            f"neighborhood-attention backend {name!r} (forced by {source}) cannot serve this call: {problem}. "
            f"Use backend 'torch' or 'auto' instead."
        )
    return name, f"forced by {source}"


def describe_backends() -> str:
    """Human-readable summary for bug reports: availability of each backend and what auto picks."""
    lines = ["neighborhood attention backends:"]
    for name, module in BACKENDS.items():
        ok, why = module.availability()
        lines.append(f"  {name:7s} {'available' if ok else 'unavailable'}: {why}")
    name, source = requested_backend()
    lines.append(f"  requested: {name} ({source})")
    example = torch.empty(1, 1, 1, 1, 32)
    rpb = torch.empty(1, 1, 1)
    lines.append("  auto on cpu: {} ({})".format(*_auto(example, rpb, False, False)))
    if torch.cuda.is_available():
        example = torch.empty(1, 1, 1, 1, 32, device="cuda", dtype=torch.float16)
        lines.append("  auto on cuda with rpb: {} ({})".format(*_auto(example, rpb, False, False)))
        lines.append("  auto on cuda without rpb: {} ({})".format(*_auto(example, None, False, False)))
    else:
        lines.append("  auto on cuda: no CUDA device visible")
    return "\n".join(lines)


def check_na_args(query, key, value, kernel_size, dilation, rpb):
    """Validate na2d's arguments; raises ValueError naming the problem."""
    if not isinstance(kernel_size, int) or kernel_size < 2 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an integer >= 1, got {dilation!r}")
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
    check_na_args(query, key, value, kernel_size, dilation, rpb)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    dropout = attn_drop > 0 and training
    needs_backward = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, rpb))
    name, _ = select_backend(query, rpb, backend, dropout, needs_backward)
    if name == "torch":
        return na_torch.na2d(query, key, value, kernel_size, dilation, rpb, scale, attn_drop if dropout else 0.0)
    return BACKENDS[name].na2d(query, key, value, kernel_size, dilation, rpb, scale)


class NeighborhoodAttention2D(nn.Module):
    """DiNAT's attention layer on [batch, height, width, dim] maps (natten 0.14 module semantics).

    Inputs smaller than kernel_size*dilation on an axis are zero-padded on the bottom/right
    before the qkv projection and cropped back after attention, as natten 0.14 did.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int, dilation: int = 1, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 rel_pos_bias: bool = True, backend: str | None = None):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if kernel_size < 2 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size}")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = _check_choice(backend, "NeighborhoodAttention2D(backend=...)")
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
        pad_h, pad_w = max(0, span - height), max(0, span - width)
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        padded_h, padded_w = x.shape[1:3]
        qkv = self.qkv(x).reshape(batch, padded_h, padded_w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each [B, heads, H, W, head_dim]
        out = na2d(q, k, v, self.kernel_size, self.dilation, self.rpb, self.scale, backend=self.backend,
                   attn_drop=self.attn_drop, training=self.training)
        out = out.permute(0, 2, 3, 1, 4).reshape(batch, padded_h, padded_w, dim)
        if pad_h or pad_w:
            out = out[:, :height, :width]
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, rel_pos_bias={self.rpb is not None}, backend={self.backend or 'auto'}")
