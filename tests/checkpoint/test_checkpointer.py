"""Mask2FormerCheckpointer: local paths, ImageNet pre-training as MODEL.WEIGHTS, atomic saves and resume."""
import logging
import os

import pytest
import torch

from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler
from helpers import imagenet_checkpoints as imagenet
from helpers.configs import COCO_PANOPTIC, PUBLISHED_CONFIGS, meta_model
from helpers.checkpoint_models import TinyModel, assert_same_weights, checkpoint_bytes, temp_files
from helpers.http_server import FileServer, Route
from mask2former_dinat.checkpoint import (
    CheckpointMismatchError,
    Mask2FormerCheckpointer,
    cache_path_for_url,
)
from mask2former_dinat.imagenet_pretraining import KernelSizeMismatchError


# --- local paths ---------------------------------------------------------------------------------


def test_local_path_loads_weights_and_returns_other_entries(tmp_path, cache_dir):
    source = TinyModel()
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict(), "note": "published"}, path)

    model = TinyModel()
    checkpointer = Mask2FormerCheckpointer(model)
    extra = checkpointer.load(str(path))

    assert_same_weights(model, source)
    assert extra == {"note": "published"}
    assert checkpointer.last_report.fits and checkpointer.last_report.loaded == len(source.state_dict())


def test_bare_state_dict_saved_from_ddp_loads(tmp_path, cache_dir):
    source = TinyModel()
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = TinyModel()
    Mask2FormerCheckpointer(model).load(str(path))
    assert_same_weights(model, source)


def test_missing_file_error_names_the_path(tmp_path, cache_dir):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth.*local file or an http"):
        Mask2FormerCheckpointer(TinyModel()).load(missing)


def test_corrupt_file_is_reported_as_unreadable(tmp_path, cache_dir):
    path = tmp_path / "cut.pth"
    path.write_bytes(checkpoint_bytes(tmp_path, {"model": TinyModel().state_dict()})[:200])
    with pytest.raises(ValueError, match="cut.pth is not a readable PyTorch checkpoint"):
        Mask2FormerCheckpointer(TinyModel()).load(str(path))


# --- ImageNet DiNAT pre-training as MODEL.WEIGHTS ----------------------------------------------

# Loading into a model built on the meta device checks names, shapes and the report, not values.
meta_load = pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter:UserWarning")
PARTS = [  # what a backbone pre-training leaves to initialisation in a Mask2Former, and how many keys
    "the backbone's per-level output norms (8)", "the pixel decoder", "the transformer decoder",
    "the criterion's class weights, set from the config (1)",
]


def assert_pretraining_report(report, model, config):
    """405 of 409 tensors loaded into backbone.*, exactly the classifier and its final norm left out,
    every other model key in a part that starts from initialisation."""
    model_keys = set(model.state_dict())
    loaded = {"backbone." + k for k in imagenet.backbone_names(imagenet.KERNEL_11)}
    assert report.pretraining is not None and report.pretraining.classifier == imagenet.CLASSIFIER
    assert report.pretraining.unknown == () and report.pretraining.backbone_prefix == "backbone."
    assert report.loaded == len(loaded) == 405 and report.loaded + len(report.pretraining.left_out) == 409
    assert report.unexpected == () and report.shape_mismatches == ()
    assert set(report.missing) == model_keys - loaded
    assert report.accounted_for and not report.fits
    parts = [name for name, _ in report.initialised_parts()]
    assert [p.split(" (")[0] for p in parts] == [p.split(" (")[0] for p in PARTS], parts
    assert parts[0] == PARTS[0] and parts[3] == PARTS[3]
    text = report.format()
    assert f"405 of its 409 tensors loaded into the backbone of the model built from config {config}" in text
    assert "left out (4): the classifier and its final norm" in text and "{head,norm}.{bias,weight}" in text
    assert f"start from initialisation ({len(model_keys) - 405} of the model's {len(model_keys)} keys)" in text
    assert "backbone.{norm0,norm1,norm2,norm3}.{bias,weight}" in text
    assert "sem_seg_head.pixel_decoder.*" in text and "sem_seg_head.predictor.*" in text
    assert "hint" not in text


@pytest.fixture(scope="module")
def compact_files(tmp_path_factory):
    """Both ImageNet-22K DiNAT-L files in every layout, with the manifest's names and shapes (compact values)."""
    folder = tmp_path_factory.mktemp("imagenet")
    return {
        (name, layout): imagenet.write(folder / f"{layout}-{name}", name, layout, compact=True)
        for name in (imagenet.KERNEL_7, imagenet.KERNEL_11) for layout in imagenet.LAYOUTS
    }


def test_the_published_configs_are_eight_kernel_11_dinat_large_configs():
    assert len(PUBLISHED_CONFIGS) == 8
    for config in PUBLISHED_CONFIGS:
        rpb = imagenet.meta_model(config).state_dict()["backbone.levels.0.blocks.0.attn.rpb"]
        assert tuple(rpb.shape) == (6, 21, 21), config


@meta_load
@pytest.mark.parametrize("config", PUBLISHED_CONFIGS)
def test_imagenet_pth_in_every_layout_loads_into_the_backbone_of_each_published_config(config, compact_files, cache_dir):
    model = imagenet.meta_model(config)
    for layout in imagenet.LAYOUTS:
        checkpointer = Mask2FormerCheckpointer(model, config_name=config)
        assert checkpointer.load(str(compact_files[imagenet.KERNEL_11, layout])) == (
            {} if layout.startswith("bare") else {"epoch": 300}
        )
        assert_pretraining_report(checkpointer.last_report, model, config)


@meta_load
@pytest.mark.parametrize("config", PUBLISHED_CONFIGS)
def test_kernel_7_pth_into_a_kernel_11_config_is_refused_naming_the_tables_and_the_option(config, compact_files, cache_dir):
    checkpointer = Mask2FormerCheckpointer(imagenet.meta_model(config), config_name=config)
    path = compact_files[imagenet.KERNEL_7, "bare"]
    with pytest.raises(KernelSizeMismatchError) as err:
        checkpointer.load(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: its relative position biases are for kernel size 7 ")
    assert "levels.0.blocks.0.attn.rpb [6, 13, 13] and 29 more tables" in message
    assert f"config {config} (MODEL.DINAT.KERNEL_SIZE) has kernel size 11 ([6, 21, 21])" in message
    assert "--kernel-size 11 --interpolate-rpb" in message and "dinat_large_in22k_224_11x11interp.pth" in message
    assert checkpointer.last_report is None


@meta_load
def test_imagenet_pretraining_report_is_logged_at_info(compact_files, cache_dir, caplog):
    config = PUBLISHED_CONFIGS[0]
    with caplog.at_level(logging.INFO):
        Mask2FormerCheckpointer(imagenet.meta_model(config), config_name=config).load(
            str(compact_files[imagenet.KERNEL_11, "bare"])
        )
    records = [r for r in caplog.records if "ImageNet DiNAT classification checkpoint" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert "the transformer decoder" in records[0].getMessage()


@meta_load
def test_imagenet_pretraining_is_refused_for_strict_loading(compact_files, cache_dir):
    config = PUBLISHED_CONFIGS[0]
    with pytest.raises(CheckpointMismatchError, match="not a model to evaluate") as err:
        Mask2FormerCheckpointer(imagenet.meta_model(config), strict=True, config_name=config).load(
            str(compact_files[imagenet.KERNEL_11, "model"])
        )
    assert err.value.report.accounted_for


@meta_load
def test_imagenet_pretraining_of_another_dinat_variant_is_refused_and_loads_nothing(tmp_path, cache_dir):
    from mask2former_dinat.modeling.backbone.d2_dinat import D2DiNAT

    path = imagenet.write(tmp_path / "dinat_l.pth", imagenet.KERNEL_11, compact=True)
    with torch.device("meta"):
        tiny = D2DiNAT(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], kernel_size=11,
                       dilations=[[1]] * 4, out_features=["res2", "res3", "res4", "res5"])
    with pytest.raises(CheckpointMismatchError, match="does not fit the backbone of the model.*nothing was loaded"):
        Mask2FormerCheckpointer(tiny).load(str(path))


def test_imagenet_pretraining_into_a_model_without_dinat_backbone_is_refused(tmp_path, cache_dir):
    path = imagenet.write(tmp_path / "dinat_l.pth", imagenet.KERNEL_11, compact=True)
    with pytest.raises(ValueError, match=r"dinat_l\.pth is an ImageNet DiNAT classification checkpoint, but the model has no DiNAT backbone"):
        Mask2FormerCheckpointer(TinyModel()).load(str(path))


@meta_load
def test_imagenet_url_as_model_weights_is_downloaded_once_and_converted_in_memory(compact_files, cache_dir):
    """The kernel-11 file as distributed (a bare state dict), served on 127.0.0.1 under its published path."""
    config = COCO_PANOPTIC
    model = imagenet.meta_model(config)
    url_path = "/projects/dinat/checkpoints/imagenet22k/" + imagenet.KERNEL_11
    with FileServer({url_path: Route(compact_files[imagenet.KERNEL_11, "bare"].read_bytes())}) as server:
        url = server.url(url_path)
        for _ in range(2):
            checkpointer = Mask2FormerCheckpointer(model, config_name=config)
            checkpointer.load(url)
            assert_pretraining_report(checkpointer.last_report, model, config)
            assert server.requests[url_path] == 1  # the second load reads the cache
    assert os.path.isfile(cache_path_for_url(url, str(cache_dir)))
    assert checkpointer.last_report.headline().startswith(
        f"Checkpoint {url} is an ImageNet DiNAT classification checkpoint (kernel size 11), converted in memory: "
    )


@pytest.mark.slow
def test_imagenet_pth_as_model_weights_loads_every_backbone_value(tmp_path, cache_dir):
    """End to end with real random values (200M): the kernel-11 file into the COCO panoptic model;
    every backbone tensor, the relative position biases included, arrives unchanged."""
    config = COCO_PANOPTIC
    state = imagenet.state(imagenet.KERNEL_11)
    path = tmp_path / imagenet.KERNEL_11
    torch.save(state, path)
    model = meta_model(config).to_empty(device="cpu")  # real memory, without the initialisation's cost
    checkpointer = Mask2FormerCheckpointer(model, config_name=config)
    checkpointer.load(str(path))
    assert_pretraining_report(checkpointer.last_report, model, config)
    loaded = model.state_dict()
    for name in imagenet.backbone_names(imagenet.KERNEL_11):
        assert torch.equal(loaded["backbone." + name], state[name]), name


# --- saving and resuming ------------------------------------------------------------------------


def make_training_state():
    model = TinyModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = LRMultiplier(optimizer, WarmupParamScheduler(CosineParamScheduler(1, 0), 0.1, 0.2), max_iter=10)
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler):
    optimizer.zero_grad()
    model(torch.ones(2, 4)).square().sum().backward()
    optimizer.step()
    scheduler.step()


def test_resume_restores_model_optimizer_scheduler_and_iteration(tmp_path, cache_dir):
    model, optimizer, scheduler = make_training_state()
    for _ in range(3):
        train_step(model, optimizer, scheduler)
    Mask2FormerCheckpointer(model, str(tmp_path), optimizer=optimizer, scheduler=scheduler).save(
        "model_0000002", iteration=2
    )
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"

    model2, optimizer2, scheduler2 = make_training_state()
    checkpointer = Mask2FormerCheckpointer(model2, str(tmp_path), optimizer=optimizer2, scheduler=scheduler2)
    extra = checkpointer.resume_or_load(str(tmp_path / "not_used.pth"), resume=True)

    assert extra == {"iteration": 2}
    assert_same_weights(model2, model)
    assert scheduler2.last_epoch == scheduler.last_epoch == 3
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    train_step(model, optimizer, scheduler)  # resumed training continues exactly
    train_step(model2, optimizer2, scheduler2)
    assert_same_weights(model2, model)


def test_failed_save_leaves_the_previous_checkpoint_and_tag_intact(tmp_path, cache_dir, monkeypatch):
    model = TinyModel()
    checkpointer = Mask2FormerCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1)

    def save_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fail)
    for name in ("model_final", "model_0000009"):
        with pytest.raises(OSError, match="No space left"):
            checkpointer.save(name)
    monkeypatch.undo()

    assert not (tmp_path / "model_0000009.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert temp_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]
    restored = TinyModel()
    Mask2FormerCheckpointer(restored).load(str(tmp_path / "model_final.pth"))
    assert all(torch.equal(saved[k], v) for k, v in restored.state_dict().items())
