"""Multi-scale deformable attention in pure PyTorch: one F.grid_sample per level.

Any device and dtype, no compile step; layouts in ms_deform_attn.py.
"""
import torch.nn.functional as F

NAME = "torch"


def availability():
    return True, "pure PyTorch grid_sample path"


def unsupported(value, sampling_locations, attention_weights, automatic=False):
    """Serves every call (the backend protocol is in backend_dispatch.py)."""
    return None


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, layout):
    """[N, Len_q, n_heads * head_dim]; `layout` is [(H_l, W_l, start_l), ...] as python ints,
    what ms_deform_attn.check_msda_args returns (spatial_shapes / level_start_index as tensors)."""
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
