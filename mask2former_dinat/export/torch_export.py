"""torch.export of the exportable model: the program, saved with its metadata, and loaded back.

`export_program` records ExportableMaskFormer at one image size (static) or for a range of
sizes (dynamic). A dynamic program takes heights and widths that are multiples of the model's
size divisibility (torch.export cannot prove the padding arithmetic for other sizes); the
runners (`load_program`, onnx_runtime.OnnxMaskFormer) pad other sizes to the next multiple
with the pixel mean, which the graph normalises to the zeros MaskFormer pads with, so they
serve any size in the range. While exporting, the attention dispatchers pick the backends
exporters can record (layers/backend_dispatch.py).
"""
import io
import zipfile
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..checkpoint.atomic_write import atomic_write
from . import metadata as metadata_lib
from .exportable_model import ExportableMaskFormer
from .onnx_runtime import pad_to_divisibility

__all__ = ["export_program", "save_program", "load_program", "DEFAULT_DYNAMIC_RANGE"]

DEFAULT_DYNAMIC_RANGE = (64, 4096)


def export_program(wrapper: ExportableMaskFormer, size: Sequence[int],
                   dynamic_range: Optional[Sequence[int]] = None) -> torch.export.ExportedProgram:
    """The program of `wrapper` traced on a random image of `size` (H, W); with `dynamic_range`
    (min, max pixels) height and width stay symbolic (multiples of the size divisibility)."""
    wrapper = wrapper.eval()
    example = torch.rand(1, 3, int(size[0]), int(size[1]), device=wrapper.pixel_mean.device) * 255
    dynamic_shapes = None
    if dynamic_range is not None:
        div = max(1, wrapper.size_divisibility)
        low, high = (max(2, -(-int(v) // div)) for v in dynamic_range)
        if size[0] % div or size[1] % div:
            raise ValueError(f"a dynamic export is traced at a size divisible by {div}; got {tuple(size)}")
        dynamic_shapes = {"image": {2: div * torch.export.Dim("height_blocks", min=low, max=high),
                                    3: div * torch.export.Dim("width_blocks", min=low, max=high)}}
    with torch.no_grad():
        return torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes)


def save_program(program: torch.export.ExportedProgram, path: str, meta: Dict) -> None:
    """Write the program and its metadata to `path` (.pt2) atomically."""
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={metadata_lib.METADATA_KEY: metadata_lib.dumps(meta)})
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def load_program(path: str) -> Tuple[Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]], Dict]:
    """(run, metadata) of a saved program: run(image float32 [1, 3, H, W] RGB 0-255) returns
    (pred_logits, pred_masks); a size the program does not serve raises ValueError saying so."""
    try:
        extra = {metadata_lib.METADATA_KEY: ""}
        program = torch.export.load(path, extra_files=extra)
    except (OSError, RuntimeError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"cannot load {path} as a torch.export program ({e}); export it again with "
                         "tools/export_model.py --format torch-export") from None
    meta = metadata_lib.loads(extra[metadata_lib.METADATA_KEY], path)
    module = program.module()

    def run(image: torch.Tensor):
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"{path} takes one RGB image float32 [1, 3, H, W]; got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        metadata_lib.check_input_size(meta, height, width, path)
        if meta["size"] is None:
            image = torch.from_numpy(pad_to_divisibility(image.detach().cpu().numpy(), meta))
        with torch.no_grad():
            return module(image)

    return run, meta
