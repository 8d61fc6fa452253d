"""The pixel-decoder registry and its builder (MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME)."""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder"]

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Pixel decoders of Mask2Former: called as `cls(cfg, input_shape)` with the backbone's
`output_shape()`; they implement `forward_features(features) -> (mask_features,
transformer_encoder_features, multi_scale_features)`.
"""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """Build the pixel decoder named by cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in PIXEL_DECODER_REGISTRY:
        known = sorted(k for k, _ in PIXEL_DECODER_REGISTRY)
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not a registered pixel decoder; "
            f"choose one of {known} (or register yours with @PIXEL_DECODER_REGISTRY.register())"
        )
    model = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"pixel decoder {name!r} ({type(model).__name__}) has no forward_features(features) method; "
            "Mask2Former's head calls it to get (mask_features, transformer_encoder_features, multi_scale_features)"
        )
    return model
