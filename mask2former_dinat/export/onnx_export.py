"""ONNX export: the torch.export program translated by torch.onnx's dynamo exporter.

Which exporter, checked on torch 2.14: `torch.onnx.export(..., dynamo=False)` (the TorchScript
tracer) still runs for one fixed size, but it records every size the model computes in Python
(the deformable encoder's level sizes, the attention windows and natten-0.14 padding) as
constants, so a graph it produced "with dynamic axes" computes wrong windows at any other
size without a word. The dynamo exporter translates the torch.export program, whose sizes stay
symbolic and whose every size assumption is an explicit guard; it needs onnxscript, which is
therefore part of the `export` extra. Opset 18 (grid_sample, for deformable attention, needs
16 or later).
"""
from typing import Dict

import torch

from ..checkpoint.atomic_write import atomic_write
from . import metadata as metadata_lib
from .exportable_model import INPUT_NAMES, OUTPUT_NAMES

__all__ = ["OPSET", "export_onnx"]

OPSET = 18


def export_onnx(program: torch.export.ExportedProgram, path: str, meta: Dict) -> None:
    """Translate `program` (torch_export.export_program) to ONNX and write it to `path`
    atomically, with `meta` under metadata_props[METADATA_KEY]."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs onnx, onnxscript and onnxruntime: pip install -e '.[export]'") from None
    onnx_program = torch.onnx.export(program, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                     opset_version=OPSET, dynamo=True, verbose=False)
    proto = onnx_program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = metadata_lib.METADATA_KEY, metadata_lib.dumps(meta)
    with atomic_write(path) as f:
        f.write(proto.SerializeToString())
