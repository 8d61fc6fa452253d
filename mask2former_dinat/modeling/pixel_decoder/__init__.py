"""Pixel decoders: backbone features -> per-pixel mask features + multi-scale maps for the
transformer decoder. Importing this package registers them in PIXEL_DECODER_REGISTRY."""
from .registry import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .fpn import BasePixelDecoder
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "BasePixelDecoder", "MSDeformAttnPixelDecoder"]
