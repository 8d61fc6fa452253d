"""Backbones; importing registers D2DiNAT in detectron2's BACKBONE_REGISTRY."""
from .d2_dinat import D2DiNAT  # noqa: F401
from .dinat import DiNAT  # noqa: F401
