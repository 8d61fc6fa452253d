"""Mask2Former with a DiNAT backbone on current PyTorch and detectron2.

Importing the package registers the backbone, meta-architecture, heads and
datasets with detectron2.
"""
from .config import add_dinat_config, add_maskformer2_config, get_cfg
from . import data, modeling  # noqa: F401  (registration)

__version__ = "0.1.0"
__all__ = ["add_dinat_config", "add_maskformer2_config", "get_cfg", "__version__"]
