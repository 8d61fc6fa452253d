"""The network from a raw image to its raw outputs, as one module an exporter can record.

`ExportableMaskFormer(model)` wraps a MaskFormer: its input `image` is float32 [1, 3, H, W],
RGB in 0-255 (flipped to the model's INPUT.FORMAT when that is BGR), normalised with the
model's pixel mean/std and zero-padded on the bottom/right to its size divisibility inside the
graph, exactly as MaskFormer.preprocess_image does; its outputs are the head's `pred_logits`
[1, Q, C+1] and `pred_masks` [1, Q, H_pad/4, W_pad/4]. Post-processing (resizing the masks,
semantic/instance/panoptic results) is left out of the graph: see numpy_postprocess.py.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExportableMaskFormer", "INPUT_NAMES", "OUTPUT_NAMES", "build_exportable"]

INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("pred_logits", "pred_masks")


class ExportableMaskFormer(nn.Module):
    """image [1, 3, H, W] RGB 0-255 -> (pred_logits [1, Q, C+1], pred_masks [1, Q, H_pad/4, W_pad/4])."""

    def __init__(self, model: nn.Module, input_format: str = "RGB"):
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR to export, got {input_format!r}")
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, -1, 1, 1), False)
        self.size_divisibility = int(model.size_divisibility)
        self.flip_channels = input_format == "BGR"

    def padded_size(self, height: int, width: int):
        """(H_pad, W_pad): the input size the backbone sees for an image of height x width."""
        div = max(1, self.size_divisibility)
        return -(-height // div) * div, -(-width // div) * div

    def forward(self, image: torch.Tensor):
        if self.flip_channels:
            image = image.flip(1)
        x = (image - self.pixel_mean) / self.pixel_std
        if self.size_divisibility > 1:
            div = self.size_divisibility
            height, width = x.shape[-2:]
            x = F.pad(x, (0, (div - width % div) % div, 0, (div - height % div) % div))
        outputs = self.sem_seg_head(self.backbone(x))
        return outputs["pred_logits"], outputs["pred_masks"]


def build_exportable(cfg, config_name=None):
    """(MaskFormer of `cfg` in eval mode on cfg.MODEL.DEVICE with cfg.MODEL.WEIGHTS loaded strictly,
    its ExportableMaskFormer). Empty MODEL.WEIGHTS keeps the random initialisation (with a warning)."""
    import logging

    from detectron2.modeling import build_model

    from ..checkpoint import Mask2FormerCheckpointer

    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        Mask2FormerCheckpointer(model, strict=True, config_name=config_name).load(cfg.MODEL.WEIGHTS)
    else:
        logging.getLogger(__name__).warning("MODEL.WEIGHTS is empty: exporting the random initial weights.")
    return model, ExportableMaskFormer(model, cfg.INPUT.FORMAT).eval()
