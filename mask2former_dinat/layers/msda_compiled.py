"""Multi-scale deformable attention through Mask2Former's / Deformable DETR's CUDA extension.

The extension is the python module `MultiScaleDeformableAttention` (built from Mask2Former's
modeling/pixel_decoder/ops); it takes float32/float64 CUDA tensors and is imported lazily, on
the first call that could use it.
"""
import functools
from typing import Tuple

import torch
from torch.autograd.function import once_differentiable

NAME = "compiled"
EXTENSION_MODULE = "MultiScaleDeformableAttention"
# Mask2Former's im2col_step: the compiled kernel processes the batch in chunks of this size.
_IM2COL_STEP = 128


@functools.lru_cache(maxsize=None)
def availability() -> Tuple[bool, str]:
    """(whether the compiled extension imports and has its two entry points, why)."""
    try:
        import MultiScaleDeformableAttention as ext  # noqa: N813
    except ImportError as e:
        return False, (
            f"python module {EXTENSION_MODULE!r} is not installed ({e}); build Mask2Former's "
            "modeling/pixel_decoder/ops to get it"
        )
    except Exception as e:  # a broken build (undefined symbol, ABI mismatch) must not break imports
        return False, f"python module {EXTENSION_MODULE!r} failed to import: {type(e).__name__}: {e}"
    missing = [f for f in ("ms_deform_attn_forward", "ms_deform_attn_backward") if not hasattr(ext, f)]
    if missing:
        return False, f"python module {EXTENSION_MODULE!r} lacks {missing}"
    return True, f"{EXTENSION_MODULE} from {getattr(ext, '__file__', '?')}"


def unsupported(value, sampling_locations, attention_weights, automatic=False):
    """Why the compiled kernel cannot serve this call, or None (the backend protocol is in backend_dispatch.py)."""
    if value.device.type != "cuda":
        return f"tensors are on {value.device.type} and the compiled kernel runs on CUDA only"
    if value.dtype not in (torch.float32, torch.float64):
        return f"value is {value.dtype} and the compiled kernel takes float32 or float64"
    ok, why = availability()
    return None if ok else why


def _im2col_step(batch: int) -> int:
    # the kernel asserts batch % min(batch, step) == 0
    if batch <= _IM2COL_STEP:
        return max(batch, 1)
    return next(d for d in range(_IM2COL_STEP, 0, -1) if batch % d == 0)


class _CompiledMSDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        import MultiScaleDeformableAttention as ext  # noqa: N813  (unsupported() checked it imports)

        ctx.im2col_step = im2col_step
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.ms_deform_attn_forward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        import MultiScaleDeformableAttention as ext  # noqa: N813

        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ext.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output.contiguous(), ctx.im2col_step,
        )
        return grad_value, None, None, grad_locations, grad_weights, None


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, layout):
    """[N, Len_q, n_heads * head_dim] from the extension (`layout` unused: it reads the shape tensors)."""
    return _CompiledMSDA.apply(
        value.contiguous(), spatial_shapes.long().contiguous(), level_start_index.long().contiguous(),
        sampling_locations.contiguous(), attention_weights.contiguous(), _im2col_step(value.shape[0]),
    )
