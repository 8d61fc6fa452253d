"""MSDeformAttnPixelDecoder: Mask2Former's pixel decoder, a deformable-attention transformer
encoder over the coarse backbone levels followed by an FPN step to the finer ones."""
import contextlib
import copy
import math
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from ...layers.ms_deform_attn import MSDeformAttn
from ...layers.position_encoding import PositionEmbeddingSine
from .fpn import BasePixelDecoder, check_features, lateral_conv, output_conv, sorted_by_stride
from .registry import PIXEL_DECODER_REGISTRY

__all__ = [
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoder",
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoderOnly",
]


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: src + MSDeformAttn(src + pos -> src), norm1; ReLU FFN, norm2.

    forward(src [N, S, C], pos [N, S, C], reference_points [N, S, n_levels, 2],
    spatial_shapes [n_levels, 2], level_start_index [n_levels], padding_mask [N, S] or None)
    -> [N, S, C].
    """

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None, sizes=None):
        query = src if pos is None else src + pos
        attended = self.self_attn(query, reference_points, src, spatial_shapes, level_start_index, padding_mask,
                                  input_spatial_sizes=sizes)
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of `num_layers` copies of an encoder layer, every query attending from its own pixel centre."""

    def __init__(self, encoder_layer: MSDeformAttnTransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes, valid_ratios, device):
        """Pixel centres of every level, as fractions of each level's valid area, mapped into every level.

        spatial_shapes: [(H_l, W_l)]; valid_ratios [N, n_levels, 2] (w, h) -> [N, S, n_levels, 2] (x, y).
        """
        per_level = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            # pixel centres 0.5 .. n - 0.5 (what linspace(0.5, n - 0.5, n) gives, bit for bit; torch.export
            # keeps arange's length symbolic, linspace's it fixes)
            ref_y, ref_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            per_level.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(per_level, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, src, spatial_shapes, level_start_index, valid_ratios, pos=None, padding_mask=None, sizes=None):
        """`sizes`: spatial_shapes as python (H_l, W_l) pairs when the caller has them (no device->host
        copy, and exporters keep them symbolic); read from spatial_shapes otherwise."""
        shapes = [tuple(s) for s in spatial_shapes.tolist()] if sizes is None else list(sizes)
        reference_points = self.get_reference_points(shapes, valid_ratios, device=src.device)
        output = src
        for layer in self.layers:
            output = layer(output, pos, reference_points, spatial_shapes, level_start_index, padding_mask, shapes)
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens multi-level maps, adds a learned per-level embedding to their positions and runs the encoder.

    forward(srcs: list of [N, C, H_l, W_l], pos_embeds: same shapes, masks: list of [N, H_l, W_l]
    bool (True = padding) or None) -> (memory [N, sum(H_l*W_l), C], spatial_shapes [n_levels, 2],
    level_start_index [n_levels]).
    """

    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, dim_feedforward=1024, dropout=0.1,
                 num_feature_levels=4, enc_n_points=4):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        layer = MSDeformAttnTransformerEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead,
                                                    enc_n_points)
        self.encoder = MSDeformAttnTransformerEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask):
        """[N, H, W] padding mask -> [N, 2]: the unpadded fraction of (width, height)."""
        _, h, w = mask.shape
        valid_h = torch.sum(~mask[:, :, 0], 1)
        valid_w = torch.sum(~mask[:, 0, :], 1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def forward(self, srcs, pos_embeds, masks=None):
        if masks is None:
            masks = [torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool) for x in srcs]
        src_flat, mask_flat, pos_flat, shapes = [], [], [], []
        for lvl, (src, mask, pos) in enumerate(zip(srcs, masks, pos_embeds)):
            shapes.append(src.shape[-2:])
            src_flat.append(src.flatten(2).transpose(1, 2))
            mask_flat.append(mask.flatten(1))
            pos_flat.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src_flat = torch.cat(src_flat, 1)
        mask_flat = torch.cat(mask_flat, 1)
        pos_flat = torch.cat(pos_flat, 1)
        # built from the sizes one by one (not as_tensor of a list), so that torch.export keeps them symbolic
        spatial_shapes = torch.stack([torch.full((), n, dtype=torch.long, device=src_flat.device)
                                      for shape in shapes for n in shape]).view(len(shapes), 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)
        memory = self.encoder(src_flat, spatial_shapes, level_start_index, valid_ratios, pos_flat, mask_flat,
                              sizes=[tuple(s) for s in shapes])
        return memory, spatial_shapes, level_start_index


def _autocast_off(device: torch.device):
    # the deformable encoder runs in float32 (Mask2Former: "deformable detr does not support half precision")
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder.

    The transformer in-features (res3..res5) are projected to conv_dim (1x1 conv + GroupNorm(32)),
    encoded jointly by a deformable-attention encoder and split back into maps; the finer
    in-features (res2) follow by FPN steps (lateral 1x1 conv + bilinear upsampling of the coarser
    output, then a 3x3 conv).

    forward_features(features: {"res2".."res5": [B, C_l, H_l, W_l]}) -> (
        mask_features [B, mask_dim, H_res2, W_res2],
        transformer_encoder_features: the encoder output at the coarsest level [B, conv_dim, h, w],
        multi_scale_features: 3 maps [B, conv_dim, h, w], lowest resolution first).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[str] = None,
        transformer_in_features: List[str],
        common_stride: int,
        transformer_enc_n_points: int = 4,
    ):
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES {list(transformer_in_features)} "
                f"names {missing}, which are not among the decoder's input features {sorted(input_shape)} "
                "(MODEL.SEM_SEG_HEAD.IN_FEATURES filtered by the backbone's outputs)"
            )
        if conv_dim % 32 != 0:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: CONVS_DIM ({conv_dim}) must be a multiple of 32 (its GroupNorm has 32 groups)"
            )

        shapes = sorted_by_stride(input_shape)
        self.in_features = [k for k, _ in shapes]  # res2 -> res5
        self.feature_strides = [v.stride for _, v in shapes]
        self.feature_channels = [v.channels for _, v in shapes]

        transformer_shapes = sorted_by_stride({k: v for k, v in input_shape.items() if k in transformer_in_features})
        self.transformer_in_features = [k for k, _ in transformer_shapes]  # res3 -> res5
        transformer_in_channels = [v.channels for _, v in transformer_shapes]
        self.transformer_feature_strides = [v.stride for _, v in transformer_shapes]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # input_proj.0 projects the coarsest level (encoder level 0 is the lowest resolution)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in transformer_in_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_enc_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = 3  # the transformer decoder always reads 3 scales
        self.common_stride = common_stride

        # FPN levels from the finest encoder stride down to common_stride (1: res2 for 8 -> 4)
        self.num_fpn_levels = max(0, int(math.log2(min(self.transformer_feature_strides)) - math.log2(common_stride)))
        finest_encoder_stride = min(self.transformer_feature_strides)
        fpn_strides = self.feature_strides[: self.num_fpn_levels]
        if len(fpn_strides) < self.num_fpn_levels or any(s >= finest_encoder_stride for s in fpn_strides):
            raise ValueError(
                f"MSDeformAttnPixelDecoder: reaching COMMON_STRIDE={common_stride} from the encoder's finest stride "
                f"{finest_encoder_stride} needs {self.num_fpn_levels} finer input feature(s), but the "
                f"inputs are {dict(zip(self.in_features, self.feature_strides))}"
            )
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lat, out = lateral_conv(in_channels, conv_dim, norm), output_conv(conv_dim, conv_dim, norm)
            self.add_module(f"adapter_{idx + 1}", lat)
            self.add_module(f"layer_{idx + 1}", out)
            lateral_convs.append(lat)
            output_convs.append(out)
        # top-down order (low to high resolution); plain lists: the modules are registered above
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            **BasePixelDecoder.from_config(cfg, input_shape),  # in features, conv/mask dims, norm
            # As in Mask2Former: the encoder's heads and dropout are the transformer decoder's
            # (MODEL.MASK_FORMER.*; SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS is not read),
            # and its FFN width is fixed at 1024.
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "transformer_enc_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(self, features):
        check_features(features, self.in_features, type(self).__name__)
        device = features[self.in_features[0]].device
        with _autocast_off(device):
            srcs, pos = [], []
            for idx, name in enumerate(self.transformer_in_features[::-1]):
                x = features[name].float()
                srcs.append(self.input_proj[idx](x))
                pos.append(self.pe_layer(x))

            memory, spatial_shapes, level_start_index = self.transformer(srcs, pos)
            bs = memory.shape[0]
            sizes = [tuple(s.shape[-2:]) for s in srcs]  # spatial_shapes' values, kept as python sizes
            levels = torch.split(memory, [h * w for h, w in sizes], dim=1)
            out = [z.transpose(1, 2).reshape(bs, -1, h, w) for z, (h, w) in zip(levels, sizes)]

            for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                cur = self.lateral_convs[idx](features[name].float())
                up = F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
                out.append(self.output_convs[idx](cur + up))

            multi_scale_features = out[: self.maskformer_num_feature_levels]
            return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features):
        return self.forward_features(features)
