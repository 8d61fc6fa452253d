"""The model, in data order: backbone -> pixel decoder -> transformer decoder -> head / meta-architecture.

Importing this package registers every component with detectron2's registries.
"""
from . import backbone, pixel_decoder, transformer_decoder, meta_arch  # noqa: F401
from . import maskformer_model  # noqa: F401  (registers the "MaskFormer" meta-architecture)
