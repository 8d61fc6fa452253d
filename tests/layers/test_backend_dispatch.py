"""The one backend protocol: every op's backends take the same arguments, in one ordered list."""
import inspect

import pytest
import torch

from mask2former_dinat.layers import ms_deform_attn, neighborhood_attention
from mask2former_dinat.layers.ms_deform_attn import msda_backend, select_backend

OPS = [(neighborhood_attention, "na2d"), (ms_deform_attn, "ms_deform_attn")]


PROTOCOL = {
    "na2d": "(query, key, value, kernel_size, dilation, rpb, scale, attn_drop)",
    "ms_deform_attn": "(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, layout)",
}


@pytest.mark.parametrize("op, function", OPS, ids=[f for _, f in OPS])
def test_every_backend_of_an_op_takes_the_same_arguments(op, function):
    assert op.DISPATCHER.backends == op.BACKENDS
    assert len({b.NAME for b in op.BACKENDS}) == len(op.BACKENDS)
    first = op.BACKENDS[0]
    for backend in op.BACKENDS:
        assert str(inspect.signature(getattr(backend, function))) == PROTOCOL[function], backend.NAME
        assert inspect.signature(backend.unsupported) == inspect.signature(first.unsupported), backend.NAME
        assert callable(backend.availability)


def test_deformable_attention_is_forced_by_its_context_manager_too(monkeypatch):
    monkeypatch.setenv(ms_deform_attn.ENV_VAR, "compiled")
    value = torch.zeros(1, 4, 1, 2)
    locations, weights = torch.zeros(1, 1, 1, 1, 1, 2), torch.zeros(1, 1, 1, 1, 1)
    with msda_backend("torch"):
        assert select_backend(value, locations, weights) == ("torch", "forced by msda_backend() context")
    with pytest.raises(ValueError, match="'compiled' \\(forced by \\$M2F_MSDA_BACKEND=compiled\\).*CUDA only"):
        select_backend(value, locations, weights)
    with pytest.raises(ValueError, match="unknown multi-scale deformable attention backend 'cuda' from msda_backend"):
        msda_backend("cuda").__enter__()
