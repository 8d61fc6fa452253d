"""Mask2Former with a DiNAT backbone on current PyTorch and detectron2.

Importing the package registers the backbone, meta-architecture, heads and
datasets with detectron2.
"""
import warnings

# detectron2 decorates functions with torch.jit.script at import; current torch warns about
# each one. It is noise for our users (we do not script anything).
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

from . import compat  # noqa: F401  (before anything reaches detectron2's affected modules)
from .config import add_dinat_config, add_maskformer2_config, get_cfg
from . import data, modeling  # noqa: F401  (registration)

__version__ = "0.1.0"
__all__ = ["add_dinat_config", "add_maskformer2_config", "get_cfg", "__version__"]
