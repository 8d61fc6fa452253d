"""Heads that sit on the backbone (registered in detectron2's SEM_SEG_HEADS_REGISTRY)."""
from .mask_former_head import MaskFormerHead

__all__ = ["MaskFormerHead"]
