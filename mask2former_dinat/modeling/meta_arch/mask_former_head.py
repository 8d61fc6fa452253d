"""MaskFormerHead: the pixel decoder followed by the transformer decoder (the "predictor")."""
from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder import build_pixel_decoder
from ..pixel_decoder.fpn import sorted_by_stride
from ..transformer_decoder import build_transformer_decoder

__all__ = ["MaskFormerHead"]

# TRANSFORMER_IN_FEATURE values that name a pixel-decoder output rather than a backbone feature.
_PIXEL_DECODER_INPUTS = ("multi_scale_pixel_decoder", "transformer_encoder", "pixel_embedding")


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Turns backbone features into per-query class logits and mask logits.

    The pixel decoder makes per-pixel mask features (stride COMMON_STRIDE) and, for
    Mask2Former, multi-scale features; the predictor reads the features chosen by
    `transformer_in_feature`:
      "multi_scale_pixel_decoder": the pixel decoder's multi-scale features (Mask2Former),
      "transformer_encoder": the pixel decoder's transformer-encoder output,
      "pixel_embedding": the mask features themselves,
      any backbone feature name (e.g. "res5"): that backbone feature.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: backbone features the head reads, name -> ShapeSpec.
            num_classes: number of classes, without "no object".
            pixel_decoder: module with forward_features(features) ->
                (mask_features, transformer_encoder_features, multi_scale_features).
            loss_weight, ignore_value: kept for semantic-segmentation tooling; the losses
                themselves live in the meta-architecture's criterion.
            transformer_predictor: forward(x, mask_features, mask) -> {"pred_logits", "pred_masks", ...}.
            transformer_in_feature: which features the predictor reads (see the class docstring).
        """
        super().__init__()
        self.in_features = [name for name, _ in sorted_by_stride(input_shape)]
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.num_classes = num_classes
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES asks for {missing}, which the backbone does not output "
                f"(it outputs {sorted(input_shape)}); fix IN_FEATURES or the backbone's OUT_FEATURES"
            )
        if in_feature in ("transformer_encoder", "multi_scale_pixel_decoder"):
            predictor_in_channels = head.CONVS_DIM
        elif in_feature == "pixel_embedding":
            predictor_in_channels = head.MASK_DIM
        elif in_feature in input_shape:
            predictor_in_channels = input_shape[in_feature].channels
        else:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={in_feature!r} is neither one of "
                f"{_PIXEL_DECODER_INPUTS} nor a backbone feature ({sorted(input_shape)})"
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": in_feature,
            "transformer_predictor": build_transformer_decoder(cfg, predictor_in_channels, mask_classification=True),
        }

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None):
        """features: backbone outputs name -> [B, C, h, w]. Returns the predictor's dict:
        pred_logits [B, Q, K+1], pred_masks [B, Q, H/4, W/4], aux_outputs."""
        mask_features, transformer_encoder_features, multi_scale_features = self.pixel_decoder.forward_features(
            features
        )
        if self.transformer_in_feature == "multi_scale_pixel_decoder":
            predictor_input = multi_scale_features
        elif self.transformer_in_feature == "transformer_encoder":
            if transformer_encoder_features is None:
                raise ValueError(
                    "TRANSFORMER_IN_FEATURE='transformer_encoder' needs a pixel decoder with a transformer "
                    "encoder (e.g. MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS > 0)"
                )
            predictor_input = transformer_encoder_features
        elif self.transformer_in_feature == "pixel_embedding":
            predictor_input = mask_features
        else:
            predictor_input = features[self.transformer_in_feature]
        return self.predictor(predictor_input, mask_features, mask)
