"""Backbones; importing registers D2DiNAT in detectron2's BACKBONE_REGISTRY."""
from .dinat import D2DiNAT, DiNAT  # noqa: F401
