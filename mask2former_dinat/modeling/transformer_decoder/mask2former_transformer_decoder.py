"""Mask2Former's masked-attention transformer decoder (the mask head's "predictor")."""
import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F

from ...layers.position_encoding import PositionEmbeddingSine
from .layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .registry import TRANSFORMER_DECODER_REGISTRY

__all__ = ["MultiScaleMaskedTransformerDecoder"]


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learned queries refined by layers of masked cross-attention, self-attention and FFN.

    Layer i attends to feature level i % 3, and only to the pixels inside the mask that
    the previous prediction gave the query (where the sigmoid of its mask logit, resized
    to that level, is >= 0.5; a query whose mask is empty at that level sees everything).
    A prediction (class logits and mask logits) is made from the initial queries and after
    every layer; all but the last are returned as auxiliary outputs for deep supervision.
    """

    num_feature_levels = 3

    @configurable
    def __init__(self, in_channels, mask_classification=True, *, num_classes, hidden_dim, num_queries, nheads,
                 dim_feedforward, dec_layers, pre_norm, mask_dim, enforce_input_project):
        """
        Args:
            in_channels: channels of the multi-scale features.
            mask_classification: must be True (this decoder always classifies its masks).
            num_classes: number of categories, without the "no object" class.
            hidden_dim: query / attention width.
            num_queries: number of queries.
            nheads: attention heads.
            dim_feedforward: FFN hidden width.
            dec_layers: number of decoder layers (one fewer than MODEL.MASK_FORMER.DEC_LAYERS,
                which also counts the prediction from the initial queries).
            pre_norm: LayerNorm before each sub-layer instead of after the residual sum.
            mask_dim: channels of the mask features (and output width of mask_embed).
            enforce_input_project: add a 1x1 conv on the features even when in_channels == hidden_dim.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder only supports mask classification "
                             "(mask_classification=True)")
        if dec_layers < 0:
            raise ValueError(f"dec_layers must be >= 0, got {dec_layers} (MODEL.MASK_FORMER.DEC_LAYERS must be >= 1)")
        if hidden_dim % nheads != 0:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by nheads ({nheads})")
        self.mask_classification = mask_classification
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, normalize_before=pre_norm) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, normalize_before=pre_norm) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, normalize_before=pre_norm) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # the queries' content
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # the queries' positional embedding
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
            else:
                proj = nn.Identity()
            self.input_proj.append(proj)

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.mask_dim = mask_dim

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification=True):
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1 (it counts the initial prediction), "
                             f"got {mf.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
        }

    def forward(self, x, mask_features, mask=None):
        """
        Args:
            x: list of 3 feature maps [B, in_channels, h_l, w_l], lowest resolution first.
            mask_features: [B, mask_dim, H/4, W/4], the per-pixel embeddings masks are read from.
            mask: padding mask; not supported, must be None.
        Returns:
            {"pred_logits": [B, Q, num_classes + 1], "pred_masks": [B, Q, H/4, W/4],
             "aux_outputs": [{"pred_logits", "pred_masks"}, ...] (one per earlier prediction,
             num_layers of them, earliest first)}.
        """
        self._check_inputs(x, mask_features, mask)
        src, pos, sizes = [], [], []
        for i, feat in enumerate(x):
            sizes.append(feat.shape[-2:])
            pos.append(self.pe_layer(feat).flatten(2).permute(2, 0, 1))
            level = self.input_proj[i](feat).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(level.permute(2, 0, 1))  # [HW, B, C]

        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)

        classes, masks = [], []
        logits, mask_logits, attn_mask = self._predict(output, mask_features, sizes[0])
        classes.append(logits)
        masks.append(mask_logits)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # A query whose mask is empty at this level attends everywhere rather than nowhere.
            attn_mask = attn_mask & ~attn_mask.all(dim=-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, src[level], memory_mask=attn_mask, pos=pos[level], query_pos=query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            logits, mask_logits, attn_mask = self._predict(
                output, mask_features, sizes[(i + 1) % self.num_feature_levels])
            classes.append(logits)
            masks.append(mask_logits)

        return {
            "pred_logits": classes[-1],
            "pred_masks": masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])],
        }

    def _predict(self, output, mask_features, attn_mask_size):
        """Class logits [B, Q, K+1], mask logits [B, Q, H/4, W/4] and the next layer's
        cross-attention mask [B * nheads, Q, h*w] (True: not attended) at attn_mask_size."""
        decoded = self.decoder_norm(output).transpose(0, 1)  # [B, Q, C]
        logits = self.class_embed(decoded)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        with torch.no_grad():
            resized = F.interpolate(mask_logits, size=attn_mask_size, mode="bilinear", align_corners=False)
            # sigmoid(x) < 0.5 rather than x < 0: they differ for tiny negative x, and the
            # published models were computed with the former.
            attn_mask = resized.sigmoid().flatten(2) < 0.5
            attn_mask = attn_mask.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)
        return logits, mask_logits, attn_mask

    def _check_inputs(self, x, mask_features, mask):
        if mask is not None:
            raise ValueError("MultiScaleMaskedTransformerDecoder does not use padding masks; pass mask=None")
        if not isinstance(x, (list, tuple)) or len(x) != self.num_feature_levels:
            got = len(x) if isinstance(x, (list, tuple)) else type(x).__name__
            raise ValueError(f"expected a list of {self.num_feature_levels} feature maps (lowest resolution "
                             f"first), got {got}")
        if mask_features.dim() != 4 or mask_features.shape[1] != self.mask_dim:
            raise ValueError(f"mask_features must be [B, {self.mask_dim}, H, W], got {tuple(mask_features.shape)}")
        for i, feat in enumerate(x):
            if feat.dim() != 4 or feat.shape[1] != self.in_channels or feat.shape[0] != mask_features.shape[0]:
                raise ValueError(
                    f"feature level {i} must be [B={mask_features.shape[0]}, {self.in_channels}, h, w] like "
                    f"mask_features' batch and the decoder's in_channels, got {tuple(feat.shape)}")
