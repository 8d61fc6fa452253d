"""Key reports: what a checkpoint leaves missing, unexpected or mismatched, grouped and explained."""
import logging

import pytest
import torch

from helpers.checkpoint_models import TinyModel
from helpers.configs import COCO_PANOPTIC, published_config, published_shapes
from mask2former_dinat.checkpoint import (
    CheckpointMismatchError,
    Mask2FormerCheckpointer,
    compare_state_dicts,
    group_keys,
)


# --- key reports --------------------------------------------------------------------------------


def test_group_keys_compresses_indices_into_exact_patterns():
    keys = [f"backbone.levels.2.blocks.{i}.attn.rpb" for i in range(3, 18)]
    keys += ["head.0.weight", "head.0.bias", "head.2.weight", "head.3.weight", "head.4.weight", "pixel_std"]
    assert group_keys(keys) == [
        "backbone.levels.2.blocks.{3..17}.attn.rpb",
        "head.0.{bias,weight}",
        "head.{2..4}.weight",
        "pixel_std",
    ]


def test_report_lists_missing_unexpected_and_mismatched_keys_grouped(tmp_path, cache_dir, caplog):
    other = TinyModel(depth=3, kernel=5, num_classes=7)
    state = dict(other.state_dict())
    state["backbone.norm9.weight"] = torch.ones(4)
    path = tmp_path / "other.pth"
    torch.save({"model": state}, path)

    model = TinyModel(depth=6, kernel=3, num_classes=3)
    qkv_before = model.backbone.levels[0].blocks[4].attn.qkv.weight.detach().clone()
    rpb_before = model.backbone.levels[0].blocks[0].attn.rpb.detach().clone()
    checkpointer = Mask2FormerCheckpointer(model, config_name="configs/tiny.yaml")
    with caplog.at_level(logging.WARNING):
        checkpointer.load(str(path))
    report = checkpointer.last_report

    assert report.missing == tuple(
        sorted(f"backbone.levels.0.blocks.{i}.attn.{p}" for i in (3, 4, 5) for p in ("qkv.bias", "qkv.weight", "rpb"))
    )
    assert report.unexpected == ("backbone.norm9.weight",)
    assert sorted(report.shape_mismatches) == sorted(
        [(f"backbone.levels.0.blocks.{i}.attn.rpb", (2, 9, 9), (2, 5, 5)) for i in range(3)]
        + [
            ("sem_seg_head.predictor.class_embed.bias", (8,), (4,)),
            ("sem_seg_head.predictor.class_embed.weight", (8, 4), (4, 4)),
        ]
    )
    assert report.loaded == 6 and not report.fits

    text = report.format()
    assert "does not fit the model built from config configs/tiny.yaml" in text
    assert "backbone.levels.0.blocks.{3..5}.attn.rpb" in text
    assert "backbone.levels.0.blocks.{3..5}.attn.qkv.{bias,weight}" in text
    assert "backbone.levels.0.blocks.{0..2}.attn.rpb (checkpoint [2, 9, 9], model [2, 5, 5])" in text
    assert "kernel size 5 in the checkpoint but 3 in the model" in text
    assert "7 classes in the checkpoint but 3 in the model" in text
    assert any(r.levelno == logging.WARNING and "does not fit" in r.getMessage() for r in caplog.records)

    # what fits was loaded, what does not kept its initial values
    torch.testing.assert_close(
        model.backbone.levels[0].blocks[1].attn.qkv.weight, other.backbone.levels[0].blocks[1].attn.qkv.weight
    )
    assert torch.equal(model.backbone.levels[0].blocks[4].attn.qkv.weight, qkv_before)
    assert torch.equal(model.backbone.levels[0].blocks[0].attn.rpb, rpb_before)


def published_state(reference_dir, config: str):
    return {name: torch.empty(shape, device="meta") for name, shape in published_shapes(config).items()}


def test_report_on_published_names_stays_short_by_summarising_prefixes(reference_dir):
    model = published_state(reference_dir, COCO_PANOPTIC)
    unconverted_backbone = {k[len("backbone."):]: v for k, v in model.items() if k.startswith("backbone.")}
    lines = compare_state_dicts(model, unconverted_backbone, source="dinat_large_in22k_224.pth").format().splitlines()

    assert lines[0].startswith("Checkpoint dinat_large_in22k_224.pth does not fit the model: 706 missing keys, ")
    assert lines[1].startswith("  missing in checkpoint (706): backbone.levels.{0..3}.*; ")
    assert "sem_seg_head.pixel_decoder.{adapter_1,input_proj,layer_1,mask_features,transformer}.*" in lines[1]
    assert lines[2].startswith("  not in model (413): levels.0.blocks.{0..2}.*; ")
    assert "convert-pretrained-dinat-model-to-d2.py" in lines[3]
    assert len(lines) == 4


def test_report_on_published_names_explains_a_checkpoint_of_another_dataset(reference_dir):
    ade_semantic = published_config("ade20k", "semantic")
    report = compare_state_dicts(
        published_state(reference_dir, ade_semantic), published_state(reference_dir, COCO_PANOPTIC),
        source="coco_panoptic.pth", config=ade_semantic,
    )
    assert report.missing == report.unexpected == ()
    assert {k for k, _, _ in report.shape_mismatches} == {
        "criterion.empty_weight",
        "sem_seg_head.predictor.class_embed.bias",
        "sem_seg_head.predictor.class_embed.weight",
        "sem_seg_head.predictor.query_embed.weight",
        "sem_seg_head.predictor.query_feat.weight",
    }
    text = report.format()
    assert f"does not fit the model built from config {ade_semantic}" in text
    assert "133 classes in the checkpoint but 150 in the model" in text
    assert "200 object queries in the checkpoint but 100 in the model" in text


def test_report_truncates_a_long_list_of_shape_mismatches():
    model_state = {f"w{i}": torch.zeros(i + 1) for i in range(10)}
    checkpoint = {f"w{i}": torch.zeros(i + 2) for i in range(10)}
    line = compare_state_dicts(model_state, checkpoint, source="x.pth").format(max_groups=2).splitlines()[1]
    assert line == (
        "  shape differs, not loaded (10): w0 (checkpoint [2], model [1]); w1 (checkpoint [3], model [2])"
        " ... and 8 more group(s)"
    )


def test_strict_mismatch_raises_and_loads_nothing(tmp_path, cache_dir):
    path = tmp_path / "k5.pth"
    torch.save({"model": TinyModel(kernel=5).state_dict()}, path)
    model = TinyModel(kernel=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="Strict loading: nothing was loaded") as err:
        Mask2FormerCheckpointer(model, strict=True).load(str(path))
    assert len(err.value.report.shape_mismatches) == 4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    fitting = tmp_path / "k3.pth"
    torch.save({"model": TinyModel(kernel=3).state_dict()}, fitting)
    checkpointer = Mask2FormerCheckpointer(model, strict=True)
    checkpointer.load(str(fitting))
    assert checkpointer.last_report.fits


def test_checkpoint_sharing_no_key_with_the_model_is_an_error(tmp_path, cache_dir):
    # an unconverted ImageNet backbone: its names lack the "backbone." prefix
    path = tmp_path / "dinat_imagenet.pth"
    torch.save({"model": TinyModel().backbone.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match="convert-pretrained-dinat-model-to-d2"):
        Mask2FormerCheckpointer(TinyModel()).load(str(path))
