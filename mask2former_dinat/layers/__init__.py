"""layers: neighborhood attention, multi-scale deformable attention and position encodings.

Each attention op picks its kernel through one BackendDispatcher (backend_dispatch.py) over
an ordered tuple of backend modules, one file each: na_natten, na_flex, na_torch for
neighborhood_attention; msda_compiled, msda_torch for ms_deform_attn.
"""
from .neighborhood_attention import NeighborhoodAttention2D, na2d, na_backend
from .position_encoding import PositionEmbeddingSine

__all__ = ["NeighborhoodAttention2D", "PositionEmbeddingSine", "na2d", "na_backend"]
