"""layers: neighborhood attention and position encodings."""
from .neighborhood_attention import (
    NeighborhoodAttention2D,
    describe_backends,
    na2d,
    na_backend,
    select_backend,
)
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "NeighborhoodAttention2D",
    "PositionEmbeddingSine",
    "describe_backends",
    "na2d",
    "na_backend",
    "select_backend",
]
