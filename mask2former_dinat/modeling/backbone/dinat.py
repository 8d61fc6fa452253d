"""DiNAT, the Dilated Neighborhood Attention Transformer, and D2DiNAT, its detectron2 backbone.

The image goes through a convolutional tokenizer (stride 4), then four levels of
neighborhood-attention blocks; every level but the last ends with a stride-2 conv
downsampler. Tokens stay channels-last, [B, H, W, C], inside the network; the
features handed to detectron2 are channels-first, [B, C, H, W].

Module and parameter names follow the published DiNAT checkpoints exactly
(patch_embed, levels.i.blocks.j.{norm1,attn,norm2,mlp}, levels.i.downsample, norm{i}).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

from mask2former_dinat.layers import NeighborhoodAttention2D

__all__ = ["ConvTokenizer", "ConvDownsampler", "Mlp", "DropPath", "NATransformerLayer", "DiNATLevel", "DiNAT", "D2DiNAT"]


class ConvTokenizer(nn.Module):
    """Image [B, C_in, H, W] -> tokens [B, ceil(H/4), ceil(W/4), dim]: two stride-2 3x3 convs, then LayerNorm."""

    def __init__(self, in_chans: int = 3, dim: int = 64):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """Tokens [B, H, W, dim] -> [B, ceil(H/2), ceil(W/2), 2*dim]: stride-2 3x3 conv (no bias), then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    """Per-token feed-forward network on [..., dim]: fc1 -> GELU -> fc2, dropout after each."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's residual branch with probability `p`
    and scale the kept ones by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self):
        return f"p={self.p}"


class NATransformerLayer(nn.Module):
    """One DiNAT block on [B, H, W, dim]: pre-norm neighborhood attention and MLP, each a residual
    branch with stochastic depth and optional layer scale (`gamma1`, `gamma2`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        dilation: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: Optional[float] = None,
        na_backend: Optional[str] = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(
            dim,
            num_heads,
            kernel_size,
            dilation=dilation,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            backend=na_backend,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x):
        a = self.attn(self.norm1(x))
        if self.layer_scale:
            a = self.gamma1 * a
        x = x + self.drop_path(a)
        m = self.mlp(self.norm2(x))
        if self.layer_scale:
            m = self.gamma2 * m
        return x + self.drop_path(m)


class DiNATLevel(nn.Module):
    """One resolution level: `blocks` (one dilation each), then an optional `downsample`.

    forward([B, H, W, dim]) -> (level output [B, H, W, dim], downsampled [B, H/2, W/2, 2*dim] or None
    when the level has no downsampler or `downsample=False`).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        kernel_size: int,
        dilations: Sequence[int],
        drop_paths: Sequence[float],
        downsample: bool,
        use_checkpoint: bool = False,
        **block_kwargs,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            NATransformerLayer(
                dim, num_heads, kernel_size, dilation=dilations[j], drop_path=drop_paths[j], **block_kwargs
            )
            for j in range(depth)
        )
        self.downsample = ConvDownsampler(dim) if downsample else None
        self.use_checkpoint = use_checkpoint

    def forward(self, x, downsample: bool = True):
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x, (self.downsample(x) if downsample and self.downsample is not None else None)


def _check_architecture(embed_dim, depths, num_heads, kernel_size, dilations, out_indices):
    """Raise ValueError naming the MODEL.DINAT key that is inconsistent."""
    if len(num_heads) != len(depths):
        raise ValueError(
            f"MODEL.DINAT.NUM_HEADS {list(num_heads)} has {len(num_heads)} entries but MODEL.DINAT.DEPTHS "
            f"{list(depths)} has {len(depths)}: give one head count per level."
        )
    if len(dilations) != len(depths):
        raise ValueError(
            f"MODEL.DINAT.DILATIONS has {len(dilations)} lists but MODEL.DINAT.DEPTHS {list(depths)} has "
            f"{len(depths)} levels: give one list of dilations per level."
        )
    for i, (depth, dils) in enumerate(zip(depths, dilations)):
        if len(dils) != depth:
            raise ValueError(
                f"MODEL.DINAT.DILATIONS[{i}] = {list(dils)} has {len(dils)} entries but MODEL.DINAT.DEPTHS[{i}] "
                f"is {depth}: give one dilation per block."
            )
        if any(int(d) < 1 for d in dils):
            raise ValueError(f"MODEL.DINAT.DILATIONS[{i}] = {list(dils)}: dilations must be >= 1.")
    for i, heads in enumerate(num_heads):
        dim = embed_dim * 2**i
        if heads < 1 or dim % heads:
            raise ValueError(
                f"level {i} has {dim} channels (MODEL.DINAT.EMBED_DIM {embed_dim} * 2**{i}), which "
                f"MODEL.DINAT.NUM_HEADS[{i}] = {heads} does not divide: pick a head count that divides it."
            )
    if embed_dim % 2:
        raise ValueError(
            f"MODEL.DINAT.EMBED_DIM must be even (the tokenizer's first conv has EMBED_DIM/2 channels), got {embed_dim}."
        )
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"MODEL.DINAT.KERNEL_SIZE must be an odd number >= 3, got {kernel_size}.")
    if not out_indices or any(not 0 <= i < len(depths) for i in out_indices):
        raise ValueError(f"output levels {list(out_indices)} must be a non-empty subset of 0..{len(depths) - 1}.")


DEFAULT_DEPTHS = (3, 4, 6, 5)  # DiNAT-Mini


class DiNAT(nn.Module):
    """DiNAT feature extractor: image [B, C_in, H, W] -> {"res{i+2}": [B, embed_dim * 2**i, H/2**(i+2), W/2**(i+2)]}
    for each level i in `out_indices`, each taken before the level's downsampler and passed through `norm{i}`.

    `frozen_stages`: -1 trains everything; 0 freezes the tokenizer; N >= 1 also freezes the first N levels
    (with their output norms). Frozen parts get requires_grad=False and stay in eval mode.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        depths: Sequence[int] = DEFAULT_DEPTHS,
        num_heads: Sequence[int] = (2, 4, 8, 16),
        kernel_size: int = 7,
        dilations: Optional[Sequence[Sequence[int]]] = None,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        layer_scale: Optional[float] = None,
        in_chans: int = 3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
        na_backend: Optional[str] = None,
    ):
        super().__init__()
        if dilations is None:
            dilations = [[1] * d for d in depths]
        _check_architecture(embed_dim, depths, num_heads, kernel_size, dilations, out_indices)
        num_levels = len(depths)
        if not -1 <= frozen_stages <= num_levels:
            raise ValueError(f"MODEL.DINAT.FROZEN_STAGES must be in -1..{num_levels}, got {frozen_stages}.")
        self.in_chans = in_chans
        self.num_features = [embed_dim * 2**i for i in range(num_levels)]
        self.out_indices = sorted(set(out_indices))
        self.frozen_stages = frozen_stages

        self.patch_embed = ConvTokenizer(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        # Stochastic depth grows linearly over all blocks of all levels.
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            first = sum(depths[:i])
            self.levels.append(
                DiNATLevel(
                    self.num_features[i],
                    depths[i],
                    num_heads[i],
                    kernel_size,
                    dilations[i],
                    drop_paths=dpr[first : first + depths[i]],
                    downsample=i < num_levels - 1,
                    use_checkpoint=use_checkpoint,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    layer_scale=layer_scale,
                    na_backend=na_backend,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

        self.apply(self._init_weights)
        self._freeze_stages()

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        frozen = [self.patch_embed]
        for i in range(self.frozen_stages):
            frozen.append(self.levels[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f"norm{i}"))
        return frozen

    def _freeze_stages(self):
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x) -> Dict[str, torch.Tensor]:
        x = self.pos_drop(self.patch_embed(x))
        outs = {}
        last = self.out_indices[-1]  # levels after the last requested output are not run
        for i, level in enumerate(self.levels[: last + 1]):
            out, x = level(x, downsample=i < last)
            if i in self.out_indices:
                outs[f"res{i + 2}"] = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous()
        return outs


@BACKBONE_REGISTRY.register()
class D2DiNAT(DiNAT, Backbone):
    """DiNAT as a detectron2 backbone built from cfg.MODEL.DINAT: image [B, 3, H, W] -> the requested
    OUT_FEATURES among res2..res5 (strides 4, 8, 16, 32), channels-first."""

    @configurable
    def __init__(self, *, out_features: Sequence[str], **dinat_kwargs):
        num_levels = len(dinat_kwargs.get("depths", DEFAULT_DEPTHS))
        names = [f"res{i + 2}" for i in range(num_levels)]
        unknown = [f for f in out_features if f not in names]
        if not out_features or unknown:
            raise ValueError(
                f"MODEL.DINAT.OUT_FEATURES {list(out_features)}: "
                + (f"unknown names {unknown}; " if unknown else "empty; ")
                + f"choose from {names}."
            )
        super().__init__(out_indices=[names.index(f) for f in out_features], **dinat_kwargs)
        self._out_features = [f for f in names if f in out_features]
        self._out_feature_strides = {f"res{i + 2}": 2 ** (i + 2) for i in range(num_levels)}
        self._out_feature_channels = {f"res{i + 2}": c for i, c in enumerate(self.num_features)}

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        c = cfg.MODEL.DINAT
        in_chans = input_shape.channels if input_shape is not None and input_shape.channels else 3
        return {
            "embed_dim": c.EMBED_DIM,
            "depths": list(c.DEPTHS),
            "num_heads": list(c.NUM_HEADS),
            "kernel_size": c.KERNEL_SIZE,
            "dilations": [list(d) for d in c.DILATIONS],
            "mlp_ratio": c.MLP_RATIO,
            "qkv_bias": c.QKV_BIAS,
            "qk_scale": c.QK_SCALE,
            "drop_rate": c.DROP_RATE,
            "attn_drop_rate": c.ATTN_DROP_RATE,
            "drop_path_rate": c.DROP_PATH_RATE,
            "layer_scale": c.LAYER_SCALE,
            "in_chans": in_chans,
            "out_features": list(c.OUT_FEATURES),
            "frozen_stages": c.FROZEN_STAGES,
            "use_checkpoint": c.USE_CHECKPOINT,
            "na_backend": c.NA_BACKEND,
        }

    def forward(self, x) -> Dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"D2DiNAT takes images as [B, {self.in_chans}, H, W] (channels first); got shape {tuple(x.shape)}."
            )
        return super().forward(x)

    @property
    def size_divisibility(self) -> int:
        return 32
