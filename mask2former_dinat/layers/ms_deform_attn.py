"""Multi-scale deformable attention (Deformable DETR), as used by Mask2Former's pixel decoder.

`ms_deform_attn` samples every head's value maps bilinearly at a few learned locations per
level and sums them with attention weights. Layouts:
  value               [N, sum(H_l * W_l), n_heads, head_dim]  (levels concatenated, row-major)
  spatial_shapes      [n_levels, 2] long: (H_l, W_l)
  level_start_index   [n_levels] long: where each level starts in value's dim 1
  sampling_locations  [N, Len_q, n_heads, n_levels, n_points, 2]: (x, y) in [0, 1] of each
                      level, (0, 0) the top-left corner of the map, (1, 1) the bottom-right
  attention_weights   [N, Len_q, n_heads, n_levels, n_points]
  -> output           [N, Len_q, n_heads * head_dim]
Bilinear sampling follows grid_sample(align_corners=False, padding_mode="zeros"): pixel
(i, j) has its centre at ((j + 0.5) / W, (i + 0.5) / H) and taps outside the map read zero.

Backends, chosen by `select_backend` (and only there):
  torch     pure PyTorch (F.grid_sample per level); any device and dtype, no compile step.
  compiled  Mask2Former's / Deformable DETR's CUDA extension, the python module
            `MultiScaleDeformableAttention`, when it is installed and the tensors are
            float32/float64 on CUDA. It is imported lazily, on the first CUDA call.
The environment variable M2F_MSDA_BACKEND=auto|torch|compiled forces a choice ("auto" or
unset: compiled where it applies, else torch).
"""
import functools
import logging
import math
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = [
    "ENV_VAR",
    "EXTENSION_MODULE",
    "MSDeformAttn",
    "compiled_availability",
    "describe_backend",
    "ms_deform_attn",
    "ms_deform_attn_torch",
    "select_backend",
]

logger = logging.getLogger(__name__)

ENV_VAR = "M2F_MSDA_BACKEND"
EXTENSION_MODULE = "MultiScaleDeformableAttention"
_CHOICES = ("auto", "torch", "compiled")
# Mask2Former's im2col_step: the compiled kernel processes the batch in chunks of this size.
_IM2COL_STEP = 128


# ---------------------------------------------------------------------------------------
# backend choice


@functools.lru_cache(maxsize=None)
def compiled_availability() -> Tuple[bool, str]:
    """(whether the compiled extension imports and has its two entry points, why)."""
    try:
        import MultiScaleDeformableAttention as ext  # noqa: N813
    except ImportError as e:
        return False, (
            f"python module {EXTENSION_MODULE!r} is not installed ({e}); build Mask2Former's "
            "modeling/pixel_decoder/ops to get it"
        )
    except Exception as e:  # a broken build (undefined symbol, ABI mismatch) must not break imports
        return False, f"python module {EXTENSION_MODULE!r} failed to import: {type(e).__name__}: {e}"
    missing = [f for f in ("ms_deform_attn_forward", "ms_deform_attn_backward") if not hasattr(ext, f)]
    if missing:
        return False, f"python module {EXTENSION_MODULE!r} lacks {missing}"
    return True, f"{EXTENSION_MODULE} from {getattr(ext, '__file__', '?')}"


def _requested() -> str:
    name = (os.environ.get(ENV_VAR) or "auto").strip().lower()
    if name not in _CHOICES:
        raise ValueError(f"${ENV_VAR}={os.environ.get(ENV_VAR)!r} is not a backend; choose one of {_CHOICES}")
    return name


def _compiled_unsupported(value: torch.Tensor, sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor) -> Optional[str]:
    """Why the compiled kernel cannot serve this call, or None if it can."""
    if value.device.type != "cuda":
        return f"tensors are on {value.device.type} and the compiled kernel runs on CUDA only"
    if value.dtype not in (torch.float32, torch.float64):
        return f"value is {value.dtype} and the compiled kernel takes float32 or float64"
    if not (value.dtype == sampling_locations.dtype == attention_weights.dtype):
        return "value, sampling_locations and attention_weights have different dtypes"
    ok, why = compiled_availability()
    return None if ok else why


def select_backend(value: torch.Tensor, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor) -> Tuple[str, str]:
    """("torch" | "compiled", why) for a call with these tensors.

    Raises ValueError when $M2F_MSDA_BACKEND forces "compiled" and it cannot serve the call.
    """
    requested = _requested()
    if requested == "torch":
        return "torch", f"forced by ${ENV_VAR}=torch"
    problem = _compiled_unsupported(value, sampling_locations, attention_weights)
    if requested == "compiled":
        if problem is not None:
            raise ValueError(
                f"${ENV_VAR}=compiled but the compiled deformable-attention kernel cannot serve this call: "
                f"{problem}. Set {ENV_VAR}=auto or torch to use the pure PyTorch path."
            )
        return "compiled", f"forced by ${ENV_VAR}=compiled"
    if problem is None:
        return "compiled", "CUDA tensors and the compiled extension is installed"
    return "torch", problem


def describe_backend() -> str:
    """Human-readable summary for bug reports."""
    ok, why = compiled_availability()
    lines = [
        "multi-scale deformable attention backends:",
        "  torch     available: pure PyTorch grid_sample path",
        f"  compiled  {'available' if ok else 'unavailable'}: {why}",
        f"  requested: {os.environ.get(ENV_VAR) or 'auto'} (${ENV_VAR})",
    ]
    return "\n".join(lines)


_reported = set()


def _report(name: str, why: str) -> None:
    if (name, why) not in _reported:
        _reported.add((name, why))
        logger.info("multi-scale deformable attention: %s backend (%s)", name, why)


# ---------------------------------------------------------------------------------------
# the op


def _level_layout(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Validate the op's arguments; returns [(H_l, W_l, start_l), ...] as python ints."""
    if value.dim() != 4:
        raise ValueError(f"value must be [N, sum(H*W), n_heads, head_dim], got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "sampling_locations must be [N, Len_q, n_heads, n_levels, n_points, 2], "
            f"got shape {tuple(sampling_locations.shape)}"
        )
    n, len_in, heads, _ = value.shape
    _, len_q, _, levels, points, _ = sampling_locations.shape
    if sampling_locations.shape[2] != heads or sampling_locations.shape[0] != n:
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} must have value's batch ({n}) "
            f"and head count ({heads})"
        )
    if tuple(attention_weights.shape) != (n, len_q, heads, levels, points):
        raise ValueError(
            f"attention_weights must be [N, Len_q, n_heads, n_levels, n_points] = {(n, len_q, heads, levels, points)}, "
            f"got {tuple(attention_weights.shape)}"
        )
    if tuple(spatial_shapes.shape) != (levels, 2) or tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"spatial_shapes must be [n_levels, 2] and level_start_index [n_levels] with n_levels={levels}, "
            f"got {tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}"
        )
    if not (value.dtype == sampling_locations.dtype == attention_weights.dtype):
        raise ValueError(
            f"value, sampling_locations and attention_weights must share a dtype, got {value.dtype}, "
            f"{sampling_locations.dtype}, {attention_weights.dtype}"
        )
    if spatial_shapes.is_floating_point() or level_start_index.is_floating_point():
        raise ValueError("spatial_shapes and level_start_index must be integer (long) tensors")
    # one device->host copy for both
    flat = torch.cat([spatial_shapes.reshape(-1), level_start_index.to(spatial_shapes.dtype)]).tolist()
    shapes, starts = flat[: 2 * levels], flat[2 * levels:]
    layout, expected = [], 0
    for lvl in range(levels):
        h, w = shapes[2 * lvl], shapes[2 * lvl + 1]
        if starts[lvl] != expected:
            raise ValueError(
                f"level_start_index {starts} does not match spatial_shapes {shapes}: level {lvl} "
                f"should start at {expected}"
            )
        layout.append((h, w, expected))
        expected += h * w
    if expected != len_in:
        raise ValueError(
            f"value has {len_in} positions but spatial_shapes {[(h, w) for h, w, _ in layout]} sum to {expected}"
        )
    return layout


def ms_deform_attn_torch(value, layout, sampling_locations, attention_weights):
    """The pure PyTorch path; `layout` is [(H_l, W_l, start_l), ...] (see module docstring)."""
    n, _, heads, head_dim = value.shape
    _, len_q, _, levels, points, _ = sampling_locations.shape
    # grid_sample's grid is in [-1, 1]; with align_corners=False, -1 and 1 are the map's outer edges
    grids = 2 * sampling_locations - 1
    out = None
    for lvl, (h, w, start) in enumerate(layout):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(n * heads, head_dim, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * heads, len_q, points, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        # [N*M, D, Lq, P] weighted by [N*M, 1, Lq, P], summed over points
        wts = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(n * heads, 1, len_q, points)
        contrib = (sampled * wts).sum(-1)
        out = contrib if out is None else out + contrib
    return out.view(n, heads * head_dim, len_q).transpose(1, 2).contiguous()


def _im2col_step(batch: int) -> int:
    # the kernel asserts batch % min(batch, step) == 0
    if batch <= _IM2COL_STEP:
        return max(batch, 1)
    return next(d for d in range(_IM2COL_STEP, 0, -1) if batch % d == 0)


class _CompiledMSDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        import MultiScaleDeformableAttention as ext  # noqa: N813  (checked by select_backend)

        ctx.im2col_step = im2col_step
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        import MultiScaleDeformableAttention as ext  # noqa: N813

        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ext.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output.contiguous(), ctx.im2col_step,
        )
        return grad_value, None, None, grad_locations, grad_weights, None


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Multi-scale deformable attention; layouts in the module docstring. Returns [N, Len_q, n_heads * head_dim]."""
    layout = _level_layout(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    name, why = select_backend(value, sampling_locations, attention_weights)
    _report(name, why)
    if name == "compiled":
        return _CompiledMSDA.apply(
            value.contiguous(), spatial_shapes.long().contiguous(), level_start_index.long().contiguous(),
            sampling_locations.contiguous(), attention_weights.contiguous(), _im2col_step(value.shape[0]),
        )
    return ms_deform_attn_torch(value, layout, sampling_locations, attention_weights)


# ---------------------------------------------------------------------------------------
# the module


class MSDeformAttn(nn.Module):
    """Deformable DETR's multi-scale deformable attention layer.

    forward(query [N, Len_q, C], reference_points [N, Len_q, n_levels, 2] (normalized x, y) or
    [N, Len_q, n_levels, 4] (boxes cx, cy, w, h), input_flatten [N, sum(H*W), C],
    input_spatial_shapes [n_levels, 2] long, input_level_start_index [n_levels] long,
    input_padding_mask [N, sum(H*W)] bool or None: True marks padding) -> [N, Len_q, C].
    """

    def __init__(self, d_model=256, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        # Deformable DETR: head h starts sampling along direction 2*pi*h/n_heads (scaled so the
        # larger coordinate is 1), point p at distance p + 1 pixels; uniform attention weights.
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query, reference_points, input_flatten, input_spatial_shapes, input_level_start_index,
                input_padding_mask=None):
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(f"query must be [N, Len_q, {self.d_model}], got {tuple(query.shape)}")
        n, len_q, _ = query.shape
        if input_flatten.dim() != 3 or input_flatten.shape[-1] != self.d_model or input_flatten.shape[0] != n:
            raise ValueError(
                f"input_flatten must be [N={n}, sum(H*W), {self.d_model}], got {tuple(input_flatten.shape)}"
            )
        len_in = input_flatten.shape[1]
        if (reference_points.dim() != 4 or tuple(reference_points.shape[:3]) != (n, len_q, self.n_levels)
                or reference_points.shape[-1] not in (2, 4)):
            raise ValueError(
                f"reference_points must be [N={n}, Len_q={len_q}, n_levels={self.n_levels}, 2 or 4], "
                f"got {tuple(reference_points.shape)}"
            )
        if tuple(input_spatial_shapes.shape) != (self.n_levels, 2):
            raise ValueError(
                f"input_spatial_shapes must be [n_levels={self.n_levels}, 2], got {tuple(input_spatial_shapes.shape)}"
            )

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            if tuple(input_padding_mask.shape) != (n, len_in) or input_padding_mask.dtype != torch.bool:
                raise ValueError(
                    f"input_padding_mask must be a bool [N={n}, sum(H*W)={len_in}] tensor, got "
                    f"{input_padding_mask.dtype} {tuple(input_padding_mask.shape)}"
                )
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, len_in, self.n_heads, self.d_model // self.n_heads)

        offsets = self.sampling_offsets(query).view(n, len_q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, len_q, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(n, len_q, self.n_heads, self.n_levels, self.n_points)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalize by (W, H)
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        else:
            # offsets are relative to the box: n_points steps cover half its width/height
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)

        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(output)

    def extra_repr(self):
        return f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, n_points={self.n_points}"
