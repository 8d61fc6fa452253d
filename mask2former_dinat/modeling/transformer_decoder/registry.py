"""Registry of transformer decoders (the mask head's "predictor") and its builder."""
from detectron2.utils.registry import Registry

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder"]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Transformer decoders that turn multi-scale pixel-decoder features and mask features into
class logits and mask logits per query. Called as `obj(cfg, in_channels, mask_classification)`.
"""


def build_transformer_decoder(cfg, in_channels, mask_classification=True):
    """Build the decoder named by cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME.

    in_channels: channels of the multi-scale features the decoder attends to.
    """
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        known = ", ".join(sorted(n for n, _ in TRANSFORMER_DECODER_REGISTRY))
        raise ValueError(
            f"Unknown MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME {name!r}; registered decoders: {known}. "
            "Set the key to one of them or register yours with @TRANSFORMER_DECODER_REGISTRY.register()."
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
