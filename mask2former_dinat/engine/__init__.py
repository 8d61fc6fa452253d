"""Training infrastructure that detectron2 0.6 lacks: multi-process launch on CPU (gloo)."""
from .launch import launch

__all__ = ["launch"]
