"""layers: neighborhood attention and position encodings.

The neighborhood-attention dispatcher's introspection (select_backend, describe_backends) lives
in layers.neighborhood_attention; ms_deform_attn has a select_backend of its own.
"""
from .neighborhood_attention import NeighborhoodAttention2D, na2d, na_backend
from .position_encoding import PositionEmbeddingSine

__all__ = ["NeighborhoodAttention2D", "PositionEmbeddingSine", "na2d", "na_backend"]
