"""BasePixelDecoder: Mask2Former's light FPN pixel decoder, and the FPN convs it shares
with MSDeformAttnPixelDecoder."""
from typing import Dict

import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

from .registry import PIXEL_DECODER_REGISTRY

__all__ = ["BasePixelDecoder", "check_features", "lateral_conv", "output_conv", "sorted_by_stride"]


def lateral_conv(in_channels: int, conv_dim: int, norm: str) -> Conv2d:
    """FPN lateral ("adapter"): 1x1 conv + norm, bias only without a norm."""
    conv = Conv2d(in_channels, conv_dim, kernel_size=1, bias=norm == "", norm=get_norm(norm, conv_dim))
    weight_init.c2_xavier_fill(conv)
    return conv


def output_conv(in_channels: int, conv_dim: int, norm: str) -> Conv2d:
    """FPN output ("layer"): 3x3 conv + norm + ReLU, bias only without a norm."""
    conv = Conv2d(in_channels, conv_dim, kernel_size=3, stride=1, padding=1, bias=norm == "",
                  norm=get_norm(norm, conv_dim), activation=F.relu)
    weight_init.c2_xavier_fill(conv)
    return conv


def sorted_by_stride(input_shape: Dict[str, ShapeSpec]):
    """[(name, ShapeSpec)] from the finest stride to the coarsest (res2 -> res5)."""
    return sorted(input_shape.items(), key=lambda kv: kv[1].stride)


def check_features(features: Dict, names, owner: str) -> None:
    """Clear error when a backbone feature the decoder was built for is missing."""
    missing = [f for f in names if f not in features]
    if missing:
        raise KeyError(f"{owner}.forward_features: features lack {missing}; got {sorted(features)} "
                       f"(the decoder was built for {list(names)})")


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """Top-down FPN over the backbone features (nearest upsampling), then a 3x3 mask-feature conv.

    forward_features(features: {name: [B, C, H, W]}) -> (mask_features [B, mask_dim, H2, W2] at
    the finest feature's resolution, None, multi_scale_features: the 3 coarsest FPN outputs
    [B, conv_dim, h, w], lowest resolution first).
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dim: int, mask_dim: int, norm: str = ""):
        super().__init__()
        if not input_shape:
            raise ValueError("BasePixelDecoder: input_shape is empty; check MODEL.SEM_SEG_HEAD.IN_FEATURES")
        shapes = sorted_by_stride(input_shape)
        self.in_features = [name for name, _ in shapes]  # res2 -> res5
        channels = [spec.channels for _, spec in shapes]

        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(channels):
            if idx == len(channels) - 1:
                # the coarsest level has no lateral: its output conv reads the feature directly
                out_conv = output_conv(in_channels, conv_dim, norm)
                lateral_convs.append(None)
            else:
                lat_conv = lateral_conv(in_channels, conv_dim, norm)
                out_conv = output_conv(conv_dim, conv_dim, norm)
                self.add_module(f"adapter_{idx + 1}", lat_conv)
                lateral_convs.append(lat_conv)
            self.add_module(f"layer_{idx + 1}", out_conv)
            output_convs.append(out_conv)
        # top-down order (low to high resolution); plain lists: the modules are registered above
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # the transformer decoder always reads 3 scales

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
        }

    def forward_features(self, features):
        check_features(features, self.in_features, type(self).__name__)
        multi_scale_features = []
        y = None
        for idx, name in enumerate(self.in_features[::-1]):
            x = features[name]
            lat, out = self.lateral_convs[idx], self.output_convs[idx]
            if lat is None:
                y = out(x)
            else:
                cur = lat(x)
                y = out(cur + F.interpolate(y, size=cur.shape[-2:], mode="nearest"))
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), None, multi_scale_features

    def forward(self, features):
        return self.forward_features(features)
