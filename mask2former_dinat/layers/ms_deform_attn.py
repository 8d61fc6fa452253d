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

Backends (one file each, the protocol of backend_dispatch.py; each ms_deform_attn takes
(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, layout)),
in the order "auto" asks them:
  compiled  msda_compiled.py  Mask2Former's CUDA extension, where it is installed and the
                              tensors are float32/float64 on CUDA.
  torch     msda_torch.py     pure PyTorch (F.grid_sample per level); any device and dtype.
A backend is forced by the `msda_backend(...)` context manager or $M2F_MSDA_BACKEND
(auto|torch|compiled), first to last. Arguments are checked once, by `check_msda_args`.
"""
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import msda_compiled, msda_torch
from .backend_dispatch import BackendDispatcher

__all__ = [
    "BACKENDS",
    "DISPATCHER",
    "ENV_VAR",
    "MSDeformAttn",
    "check_msda_args",
    "describe_backends",
    "ms_deform_attn",
    "msda_backend",
    "select_backend",
]

logger = logging.getLogger(__name__)

ENV_VAR = "M2F_MSDA_BACKEND"
# The order "auto" asks the backends in; adding a backend is adding its line.
BACKENDS = (
    msda_compiled,
    msda_torch,
)
DISPATCHER = BackendDispatcher("multi-scale deformable attention", ENV_VAR, BACKENDS, context="msda_backend()",
                               export_backend=msda_torch.NAME)


def msda_backend(name: str):
    """Context manager forcing the backend of every ms_deform_attn call inside the block."""
    return DISPATCHER.force(name)


def select_backend(value: torch.Tensor, sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   backend: str | None = None) -> tuple[str, str]:
    """(backend name, why) for a call with these tensors; ValueError if a forced backend cannot serve it."""
    return DISPATCHER.select(value, sampling_locations, attention_weights, backend=backend)


def describe_backends() -> str:
    """Human-readable summary for bug reports: availability of each backend and what auto picks."""
    example = torch.empty(1, 1, 1, 1)
    return DISPATCHER.describe([("cpu", (example, example, example))])


describe_backend = describe_backends  # the env report's name for it


_reported = set()


def _report(name: str, why: str) -> None:
    if (name, why) not in _reported:
        _reported.add((name, why))
        logger.info("multi-scale deformable attention: %s backend (%s)", name, why)


def check_msda_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, sizes=None):
    """Validate ms_deform_attn's arguments (ValueError naming the problem); returns the levels' layout
    [(H_l, W_l, start_l), ...] as python ints. `sizes`: the (H_l, W_l) of spatial_shapes as python
    ints when the caller has them (exporters keep those symbolic; level_start_index is then
    their running sum by construction)."""
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
    if sizes is not None:
        if len(sizes) != levels:
            raise ValueError(f"sizes has {len(sizes)} levels, sampling_locations {levels}")
        layout, expected = [], 0
        for h, w in sizes:
            layout.append((h, w, expected))
            expected = expected + h * w
        return layout
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


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, sizes=None):
    """Multi-scale deformable attention; layouts in the module docstring (`sizes`: see check_msda_args).
    Returns [N, Len_q, n_heads * head_dim]."""
    layout = check_msda_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, sizes)
    name, why = select_backend(value, sampling_locations, attention_weights)
    _report(name, why)
    return DISPATCHER.backend(name).ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, layout)


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
                input_padding_mask=None, input_spatial_sizes=None):
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

        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights,
                                input_spatial_sizes)
        return self.output_proj(output)

    def extra_repr(self):
        return f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, n_points={self.n_points}"
