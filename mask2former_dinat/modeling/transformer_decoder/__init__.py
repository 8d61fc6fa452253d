"""Transformer decoders: queries attend to multi-scale pixel features and predict masks.

Importing this package registers MultiScaleMaskedTransformerDecoder.
"""
from .registry import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder", "MultiScaleMaskedTransformerDecoder"]
