"""DiNAT, the Dilated Neighborhood Attention Transformer, as a plain feature extractor.

The image goes through a convolutional tokenizer (stride 4), then four levels of
neighborhood-attention blocks; every level but the last ends with a stride-2 conv
downsampler. Tokens stay channels-last, [B, H, W, C], inside the network; the
features it returns are channels-first, [B, C, H, W].

Module and parameter names follow the published DiNAT checkpoints exactly
(patch_embed, levels.i.blocks.j.{norm1,attn,norm2,mlp}, levels.i.downsample, norm{i}).
Bad constructor arguments raise DiNATArgumentError, naming the arguments as the constructor
spells them; d2_dinat.py (the detectron2 backbone) re-issues them with MODEL.DINAT.* keys.
"""
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torchvision.ops import StochasticDepth

from mask2former_dinat.layers import NeighborhoodAttention2D
from mask2former_dinat.layers.neighborhood_attention import DISPATCHER as NA_DISPATCHER

__all__ = [
    "ConvTokenizer", "ConvDownsampler", "Mlp", "NATransformerLayer", "DiNATLevel", "DiNAT", "DiNATArgumentError",
    "check_dinat_arguments",
]


class ConvTokenizer(nn.Module):
    """Image [B, C_in, H, W] -> tokens [B, ceil(H/4), ceil(W/4), dim]: two stride-2 3x3 convs, then LayerNorm.

    Args:
        in_chans: image channels.
        dim: token channels (the first conv has dim // 2).
    """

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
    """Tokens [B, H, W, dim] -> [B, ceil(H/2), ceil(W/2), 2*dim]: stride-2 3x3 conv (no bias), then LayerNorm.

    Args:
        dim: input channels.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    """Per-token feed-forward network on [..., dim]: fc1 -> GELU -> fc2, dropout after each.

    Args:
        dim: input and output channels.
        hidden_dim: channels between fc1 and fc2.
        drop: dropout probability.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class NATransformerLayer(nn.Module):
    """One DiNAT block on [B, H, W, dim]: pre-norm neighborhood attention and MLP, each a residual
    branch with stochastic depth and optional layer scale (`gamma1`, `gamma2`).

    Args:
        dim: token channels.
        num_heads: attention heads.
        kernel_size: neighbourhood side.
        dilation: neighbourhood dilation.
        mlp_ratio: MLP hidden channels / dim.
        qkv_bias: whether the qkv projection has a bias.
        qk_scale: attention logit scale; None means head_dim ** -0.5.
        drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on the attention probabilities.
        drop_path: stochastic-depth probability of each residual branch (per sample).
        layer_scale: initial value of the per-channel branch scales; None disables them.
        na_backend: neighborhood-attention backend (None/"auto" lets the dispatcher choose).
    """

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
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0.0 else nn.Identity()
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

    Args:
        dim, num_heads, kernel_size: as for NATransformerLayer, shared by the level's blocks.
        depth: number of blocks.
        dilations: one dilation per block.
        drop_paths: one stochastic-depth probability per block.
        downsample: whether the level ends with a ConvDownsampler.
        use_checkpoint: recompute each block's activations in backward (training only).
        **block_kwargs: the other NATransformerLayer arguments.
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


class DiNATArgumentError(ValueError):
    """A bad DiNAT constructor argument. The message is a template whose {placeholders} are either
    argument names (spelled as the constructor spells them, or as `named(keys)` maps them) or
    the offending values."""

    def __init__(self, template: str, **values):
        self.template = template
        self.values = values
        super().__init__(self.named({}))

    def named(self, keys: Mapping[str, str]) -> str:
        """The message with each argument name spelled as `keys` maps it (unmapped names as they are)."""
        return self.template.format_map(_Spelling(self.values, keys))


class _Spelling(dict):
    def __init__(self, values, keys):
        super().__init__(values)
        self.keys_ = keys

    def __missing__(self, name):
        return self.keys_.get(name, name)


def check_dinat_arguments(*, embed_dim, depths, num_heads, kernel_size, dilations, out_indices, frozen_stages=-1,
                          mlp_ratio=3.0, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, na_backend=None,
                          **unchecked):
    """Raise DiNATArgumentError for DiNAT arguments it cannot be built from (the first problem found);
    takes DiNAT's keyword arguments, ignoring those that need no check."""
    if len(num_heads) != len(depths):
        raise DiNATArgumentError(
            "{num_heads} {heads} has {n} entries but {depths} {d} has {levels}: give one head count per level.",
            heads=list(num_heads), n=len(num_heads), d=list(depths), levels=len(depths))
    if len(dilations) != len(depths):
        raise DiNATArgumentError(
            "{dilations} has {n} lists but {depths} {d} has {levels} levels: give one list of dilations per level.",
            n=len(dilations), d=list(depths), levels=len(depths))
    for i, (depth, dils) in enumerate(zip(depths, dilations)):
        if len(dils) != depth:
            raise DiNATArgumentError(
                "{dilations}[{i}] = {dils} has {n} entries but {depths}[{i}] is {depth}: give one dilation per block.",
                i=i, dils=list(dils), n=len(dils), depth=depth)
        if any(int(d) < 1 for d in dils):
            raise DiNATArgumentError("{dilations}[{i}] = {dils}: dilations must be >= 1.", i=i, dils=list(dils))
    for i, heads in enumerate(num_heads):
        dim = embed_dim * 2**i
        if heads < 1 or dim % heads:
            raise DiNATArgumentError(
                "level {i} has {dim} channels ({embed_dim} {e} * 2**{i}), which {num_heads}[{i}] = {heads} "
                "does not divide: pick a head count that divides it.", i=i, dim=dim, e=embed_dim, heads=heads)
    if embed_dim % 2:
        raise DiNATArgumentError(
            "{embed_dim} must be even (the tokenizer's first conv has half as many channels), got {e}.", e=embed_dim)
    if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
        raise DiNATArgumentError("{kernel_size} must be an odd number >= 3, got {k}.", k=kernel_size)
    if not out_indices or any(not 0 <= i < len(depths) for i in out_indices):
        raise DiNATArgumentError("{out_indices} {o} must be a non-empty subset of 0..{last}.",
                                 o=list(out_indices), last=len(depths) - 1)
    if not -1 <= frozen_stages <= len(depths):
        raise DiNATArgumentError("{frozen_stages} must be in -1..{levels}, got {f}.", levels=len(depths), f=frozen_stages)
    if not mlp_ratio > 0:
        raise DiNATArgumentError("{mlp_ratio} must be > 0, got {r}.", r=mlp_ratio)
    for name, p in (("drop_rate", drop_rate), ("attn_drop_rate", attn_drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= p <= 1.0:
            raise DiNATArgumentError("{" + name + "} must be a probability in [0, 1], got {p}.", p=p)
    if na_backend is not None and str(na_backend).strip().lower() not in NA_DISPATCHER.choices:
        raise DiNATArgumentError("{na_backend} must be one of {choices}, got {b!r}.",
                                 choices=NA_DISPATCHER.choices, b=na_backend)


DEFAULT_DEPTHS = (3, 4, 6, 5)  # DiNAT-Mini


class DiNAT(nn.Module):
    """DiNAT feature extractor: image [B, C_in, H, W] -> {"res{i+2}": [B, embed_dim * 2**i, H/2**(i+2), W/2**(i+2)]}
    for each level i in `out_indices`, each taken before the level's downsampler and passed through `norm{i}`.

    Args:
        embed_dim: channels of level 0; level i has embed_dim * 2**i. Even.
        depths: blocks per level.
        num_heads: attention heads per level; each must divide its level's channels.
        kernel_size: neighbourhood side, odd, >= 3.
        dilations: one list per level of one dilation per block; None means all 1.
        mlp_ratio: MLP hidden channels / block channels.
        qkv_bias: whether the qkv projections have a bias.
        qk_scale: attention logit scale; None means head_dim ** -0.5.
        drop_rate: dropout after the tokenizer, the attention projections and in the MLPs.
        attn_drop_rate: dropout on the attention probabilities.
        drop_path_rate: stochastic-depth probability of the last block; it grows linearly from 0
            over all blocks of all levels.
        layer_scale: initial value of the per-channel branch scales; None disables them.
        in_chans: image channels.
        out_indices: levels whose features are returned; levels after the last are not built into
            the output (no `norm{i}`) nor run.
        frozen_stages: -1 trains everything; 0 freezes the tokenizer; N >= 1 also freezes the first
            N levels (with their output norms). Frozen parts get requires_grad=False and stay in eval mode.
        use_checkpoint: recompute each block's activations in backward (saves memory in training).
        na_backend: neighborhood-attention backend ("auto"/None, "natten", "flex", "torch").

    Raises:
        DiNATArgumentError (a ValueError) naming the argument that is bad or inconsistent.
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
        check_dinat_arguments(
            embed_dim=embed_dim, depths=depths, num_heads=num_heads, kernel_size=kernel_size, dilations=dilations,
            out_indices=out_indices, frozen_stages=frozen_stages, mlp_ratio=mlp_ratio, drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, na_backend=na_backend)
        num_levels = len(depths)
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
