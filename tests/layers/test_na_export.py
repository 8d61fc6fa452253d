"""The export backend of neighborhood attention: torch's values, picked while exporting, and
natten 0.14's padding in the exported module (a dynamic export across the padding threshold is
pinned on the whole model, tests/export/test_torch_export_dynamic.py)."""
import pytest
import torch
from helpers.na_reference import na2d_reference

from mask2former_dinat.layers import NeighborhoodAttention2D, na_backend, na_export, na_torch
from mask2former_dinat.layers.neighborhood_attention import select_backend

# measured: at most 7.2e-7 over these cases (float32; summation order differs)
TOLERANCE = 2e-6


@pytest.mark.parametrize("height,width,kernel,dilation", [(7, 9, 3, 1), (13, 11, 3, 3), (20, 17, 5, 2), (33, 40, 7, 4),
                                                          (11, 11, 11, 1)])
@pytest.mark.parametrize("with_rpb", [True, False])
def test_export_backend_gives_torch_backend_values(height, width, kernel, dilation, with_rpb):
    q, k, v = (torch.randn(2, 3, height, width, 8) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel - 1, 2 * kernel - 1) if with_rpb else None
    got = na_export.na2d(q, k, v, kernel, dilation, rpb, 0.35, 0.0)
    want = na_torch.na2d(q, k, v, kernel, dilation, rpb, 0.35, 0.0)
    assert (got - want).abs().max().item() < TOLERANCE
    assert (got - na2d_reference(q, k, v, kernel, dilation, rpb, 0.35)).abs().max().item() < TOLERANCE


def test_auto_never_picks_export_backend_in_eager_mode_but_it_can_be_forced():
    q = torch.randn(1, 2, 9, 9, 4)
    assert select_backend(q, None)[0] == "torch"
    with na_backend("export"):
        assert select_backend(q, None) == ("export", "forced by na_backend() context")


def test_export_backend_declines_attention_dropout():
    assert "dropout" in na_export.unsupported(torch.empty(1), None, 0.1)


def _exported(module, x):
    with torch.no_grad():
        return torch.export.export(module, (x,)).module()


def test_dispatcher_picks_export_backend_while_torch_export_records():
    module = NeighborhoodAttention2D(8, 2, 3, dilation=2).eval()
    graph = _exported(module, torch.randn(1, 9, 10, 8)).graph
    targets = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    # the torch backend writes rows with index_copy_, the export backend only gathers
    assert not any("index_copy" in t for t in targets)
    assert any("index_select" in t for t in targets)


@pytest.mark.parametrize("height,width", [(5, 7), (4, 12), (12, 13)])
def test_exported_module_pads_small_maps_like_natten_014(height, width):
    """k*d = 6: maps smaller on an axis are zero-padded before the projection and cropped after."""
    module = NeighborhoodAttention2D(8, 2, 3, dilation=2).eval()
    x = torch.randn(1, height, width, 8)
    with torch.no_grad():
        want = module(x)
    assert (_exported(module, x)(x) - want).abs().max().item() < TOLERANCE
