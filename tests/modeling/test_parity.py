"""The built models match the published ones: same state-dict layout as the published
checkpoints, and the same outputs as the original code on the golden data
(tests/reference/README.md says what the data is; tests/helpers/golden.py holds the check and
its tolerances), and the check is strict enough to catch plausible slips."""
import functools
import types

import pytest
import torch
from detectron2.structures import BitMasks
from helpers import golden as parity
from helpers.configs import meta_model, published_shapes

import mask2former_dinat  # noqa: F401  (registers the components)
from mask2former_dinat.layers import na_torch, neighborhood_attention
from mask2former_dinat.layers.position_encoding import PositionEmbeddingSine
from mask2former_dinat.modeling import maskformer_model

MANIFEST = published_shapes()


# ----------------------------------------------------------------------------- layout


def test_manifest_covers_the_eight_published_configs():
    assert len(MANIFEST) == 8


@pytest.mark.parametrize("config_path", sorted(MANIFEST))
def test_state_dict_names_and_shapes_equal_the_published_checkpoint(config_path):
    model = meta_model(config_path)  # no memory, no initialisation cost
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    published = {name: list(shape) for name, shape in MANIFEST[config_path].items()}
    missing = sorted(set(published) - set(ours))
    unexpected = sorted(set(ours) - set(published))
    reshaped = {k: (ours[k], published[k]) for k in published if k in ours and ours[k] != published[k]}
    assert not (missing or unexpected or reshaped), (
        f"{config_path}: {len(missing)} missing {missing[:10]}, {len(unexpected)} unexpected {unexpected[:10]}, "
        f"{len(reshaped)} with other shapes (ours, published) {dict(list(reshaped.items())[:10])}"
    )


# ----------------------------------------------------------------------------- golden outputs


@functools.lru_cache(maxsize=None)
def _golden_run():
    golden = parity.load_golden()
    model, incompatible = parity.build_golden_model(golden)
    return golden, parity.run_golden(model, golden), incompatible


def test_golden_checkpoint_loads_with_no_missing_or_unexpected_keys():
    _, _, incompatible = _golden_run()
    assert not incompatible.missing_keys and not incompatible.unexpected_keys, incompatible


@pytest.mark.parametrize("check", sorted(parity.CHECKS))
def test_outputs_match_the_original_code(check):
    golden, runs, _ = _golden_run()
    assert parity.CHECKS[check](golden, runs) == []


def test_instance_boxes_are_the_bounding_boxes_of_their_masks():
    # The original leaves pred_boxes at zero; ours are computed from the masks.
    _, runs, _ = _golden_run()
    for run in runs:
        instances = run["output"]["instances"]
        expected = BitMasks(instances.pred_masks).get_bounding_boxes().tensor
        assert torch.equal(instances.pred_boxes.tensor, expected)
        assert (instances.pred_boxes.area() > 0).any()


# ----------------------------------------------------------------------------- the check catches slips
# Each slip is one a port of the original could plausibly make; the parity check must report it.


def _backbone_layernorm_eps_1e6(model, monkeypatch):
    for m in model.backbone.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-6


def _rpb_multiplied_by_the_attention_scale(model, monkeypatch):
    na2d = neighborhood_attention.na2d

    def scaled(q, k, v, kernel_size, dilation, rpb, scale, **kwargs):
        return na2d(q, k, v, kernel_size, dilation, None if rpb is None else rpb * scale, scale, **kwargs)

    monkeypatch.setattr(neighborhood_attention, "na2d", scaled)


def _rpb_rows_for_columns(model, monkeypatch):
    na2d = neighborhood_attention.na2d

    def transposed(q, k, v, kernel_size, dilation, rpb, scale, **kwargs):
        return na2d(q, k, v, kernel_size, dilation, None if rpb is None else rpb.transpose(1, 2), scale, **kwargs)

    monkeypatch.setattr(neighborhood_attention, "na2d", transposed)


def _dilation_groups_rows_for_columns(model, monkeypatch):
    """The keys and values of dilation group (gy, gx) taken from group (gx, gy)."""
    keys = na_torch._SetContext.keys

    def swapped_keys(self, rows):
        indexer = keys(self, rows)
        _, batch, heads, gy, gx = self.args
        groups = indexer.base.view(heads, batch, gy[1] - gy[0], gx[1] - gx[0])
        if groups.shape[2] == groups.shape[3]:
            indexer.base = groups.transpose(2, 3).reshape(heads, -1)
        return indexer

    monkeypatch.setattr(na_torch._SetContext, "keys", swapped_keys)


def _gelu_tanh_approximation_in_the_backbone(model, monkeypatch):
    for m in model.backbone.modules():
        if hasattr(m, "act") and isinstance(m.act, torch.nn.GELU):
            m.act = torch.nn.GELU(approximate="tanh")


def _position_encoding_x_before_y(model, monkeypatch):
    forward = PositionEmbeddingSine.forward

    def swapped(self, x, mask=None):
        return forward(self, x, mask).roll(self.num_pos_feats, dims=1)

    monkeypatch.setattr(PositionEmbeddingSine, "forward", swapped)


def _masks_upsampled_with_align_corners(model, monkeypatch):
    functional = types.SimpleNamespace(**vars(maskformer_model.F))
    interpolate = torch.nn.functional.interpolate
    functional.interpolate = lambda *args, **kwargs: interpolate(*args, **{**kwargs, "align_corners": True})
    monkeypatch.setattr(maskformer_model, "F", functional)


SLIPS = [
    _backbone_layernorm_eps_1e6,
    _rpb_multiplied_by_the_attention_scale,
    _rpb_rows_for_columns,
    _dilation_groups_rows_for_columns,
    _gelu_tanh_approximation_in_the_backbone,
    _position_encoding_x_before_y,
    _masks_upsampled_with_align_corners,
]


@pytest.mark.parametrize("slip", SLIPS, ids=lambda f: f.__name__.strip("_"))
def test_parity_check_reports_a_slip_in_the_model(slip, monkeypatch):
    golden = parity.load_golden()
    model, _ = parity.build_golden_model(golden)
    slip(model, monkeypatch)
    found = parity.mismatches(golden, parity.run_golden(model, golden))
    assert found, f"the parity check did not notice {slip.__name__}"
