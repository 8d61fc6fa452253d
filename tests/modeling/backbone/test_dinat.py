"""DiNAT as a plain nn.Module: stochastic depth as the original DropPath drew it, errors in the
constructor's own terms, and constructor arguments documented per class."""
import inspect

import pytest
import torch

from mask2former_dinat.modeling.backbone import dinat as dinat_module
from mask2former_dinat.modeling.backbone.dinat import DiNAT, DiNATArgumentError, NATransformerLayer

TINY = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], kernel_size=5,
            dilations=[[4], [2], [1, 2], [1]], mlp_ratio=2.0)


def _original_drop_path(x, p):
    """The hand-written DropPath this package had: per-sample Bernoulli(1 - p) mask, kept rows scaled."""
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


def test_stochastic_depth_draws_and_scales_as_the_original_drop_path():
    block = NATransformerLayer(8, 2, 3, drop_path=0.3)
    x = torch.randn(16, 5, 5, 8)
    block.train()
    torch.manual_seed(3)
    got = block.drop_path(x)
    torch.manual_seed(3)
    torch.testing.assert_close(got, _original_drop_path(x, 0.3), rtol=0, atol=0)
    assert block.drop_path.p == 0.3
    block.eval()
    assert block.drop_path(x) is x
    assert isinstance(NATransformerLayer(8, 2, 3, drop_path=0.0).drop_path, torch.nn.Identity)


def test_stochastic_depth_adds_no_state_dict_entries():
    with_depth = NATransformerLayer(8, 2, 3, drop_path=0.3).state_dict()
    without = NATransformerLayer(8, 2, 3, drop_path=0.0).state_dict()
    assert list(with_depth) == list(without)


@pytest.mark.parametrize("overrides, message", [
    (dict(kernel_size=4), r"^kernel_size must be an odd number >= 3, got 4\.$"),
    (dict(num_heads=[1, 2, 4]), r"^num_heads \[1, 2, 4\] has 3 entries but depths \[1, 1, 2, 1\] has 4"),
    (dict(dilations=[[4], [2], [1], [1]]), r"^dilations\[2\] = \[1\] has 1 entries but depths\[2\] is 2"),
    (dict(embed_dim=15, num_heads=[1, 1, 1, 1]), r"^embed_dim must be even"),
    (dict(out_indices=[4]), r"^out_indices \[4\] must be a non-empty subset of 0..3"),
    (dict(frozen_stages=5), r"^frozen_stages must be in -1..4, got 5"),
    (dict(attn_drop_rate=-0.1), r"^attn_drop_rate must be a probability in \[0, 1\]"),
    (dict(na_backend="cutlass"), r"^na_backend must be one of \('auto', 'natten', 'flex', 'export', 'torch'\), got 'cutlass'"),
])
def test_bad_arguments_raise_naming_the_constructor_argument(overrides, message):
    with pytest.raises(DiNATArgumentError, match=message):
        DiNAT(**{**TINY, **overrides})


def test_argument_errors_can_be_spelled_with_other_names():
    error = DiNATArgumentError("{kernel_size} must be odd, got {k}.", k=4)
    assert str(error) == "kernel_size must be odd, got 4."
    assert error.named({"kernel_size": "KEY"}) == "KEY must be odd, got 4."
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("name", ["ConvTokenizer", "ConvDownsampler", "Mlp", "NATransformerLayer", "DiNATLevel", "DiNAT"])
def test_every_module_documents_its_constructor_arguments(name):
    cls = getattr(dinat_module, name)
    doc = inspect.getdoc(cls)
    assert "\nArgs:\n" in doc, name
    args_section = doc.split("\nArgs:\n", 1)[1]
    for arg in inspect.signature(cls.__init__).parameters:
        if arg not in ("self", "block_kwargs"):
            assert f"{arg}" in args_section, f"{name}: {arg} undocumented"
