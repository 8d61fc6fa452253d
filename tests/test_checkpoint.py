"""Mask2FormerCheckpointer: path/URL loading with a cache, weights-only reading, key reports, atomic saves."""
import argparse
import json
import logging
import os
import pickle
import socket

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler
from helpers import imagenet_checkpoints as imagenet
from helpers.http_server import FileServer, Route
from mask2former_dinat.checkpoint import (
    CheckpointDownloadError,
    CheckpointMismatchError,
    Mask2FormerCheckpointer,
    UnsafeCheckpointError,
    cache_path_for_url,
    compare_state_dicts,
    default_cache_dir,
    group_keys,
    load_checkpoint_file,
)
from mask2former_dinat.imagenet_pretraining import KernelSizeMismatchError

# --- a tiny model with DiNAT-like names --------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, heads: int, kernel: int, dim: int = 4):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rpb = nn.Parameter(torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1))


class Block(nn.Module):
    def __init__(self, heads: int, kernel: int):
        super().__init__()
        self.attn = Attention(heads, kernel)


class Level(nn.Module):
    def __init__(self, depth: int, kernel: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(2, kernel) for _ in range(depth))


class Backbone(nn.Module):
    def __init__(self, depth: int, kernel: int):
        super().__init__()
        self.levels = nn.ModuleList([Level(depth, kernel)])


class Predictor(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.class_embed = nn.Linear(4, num_classes + 1)


class Head(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.predictor = Predictor(num_classes)


class TinyModel(nn.Module):
    """backbone.levels.0.blocks.{i}.attn.{qkv,rpb} and sem_seg_head.predictor.class_embed, like the real model."""

    def __init__(self, depth: int = 4, kernel: int = 3, num_classes: int = 3):
        super().__init__()
        self.backbone = Backbone(depth, kernel)
        self.sem_seg_head = Head(num_classes)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1), persistent=False)

    def forward(self, x):
        return self.sem_seg_head.predictor.class_embed(self.backbone.levels[0].blocks[0].attn.qkv(x)[:, :4])


def assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("M2F_DINAT_CACHE", str(path))
    monkeypatch.delenv("M2F_DINAT_ALLOW_PICKLE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # the test server is local even behind a proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return path


def checkpoint_bytes(tmp_path, obj) -> bytes:
    path = tmp_path / "tmp_ckpt.pth"
    torch.save(obj, path)
    return path.read_bytes()


def temp_files(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".tmp")]


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


# --- URLs and the cache --------------------------------------------------------------------------


def test_cache_location_follows_env_and_mirrors_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == str(tmp_path / "c")
    url = "https://shi-labs.com/projects/dinat/checkpoints/m2f/mask2former_dinat_large_coco_panoptic.pth"
    assert cache_path_for_url(url) == str(
        tmp_path / "c" / "shi-labs.com" / "projects/dinat/checkpoints/m2f/mask2former_dinat_large_coco_panoptic.pth"
    )
    with_query = cache_path_for_url("http://h:8080/a/w.pkl?token=1")
    assert with_query.startswith(str(tmp_path / "c" / "h_8080" / "a" / "w-")) and with_query.endswith(".pkl")
    monkeypatch.delenv("M2F_DINAT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "mask2former_dinat")
    with pytest.raises(ValueError, match="does not name a file"):
        cache_path_for_url("https://example.com/")


def test_url_is_downloaded_once_then_loaded_from_the_cache_without_network(tmp_path, cache_dir):
    source = TinyModel()
    data = checkpoint_bytes(tmp_path, {"model": source.state_dict(), "iteration": 7})
    with FileServer({"/m2f/weights.pth": Route(data)}) as server:
        url = server.url("/m2f/weights.pth")
        first, second = TinyModel(), TinyModel()
        assert Mask2FormerCheckpointer(first).load(url) == {"iteration": 7}
        Mask2FormerCheckpointer(second).load(url)
        assert server.requests["/m2f/weights.pth"] == 1
    assert_same_weights(first, source)
    assert_same_weights(second, source)
    cached = cache_path_for_url(url)
    assert open(cached, "rb").read() == data

    third = TinyModel()  # the server is gone: only the cache can serve this
    Mask2FormerCheckpointer(third).load(url)
    assert_same_weights(third, source)


def test_cut_download_leaves_no_file_under_the_final_name_and_retry_succeeds(tmp_path, cache_dir):
    data = checkpoint_bytes(tmp_path, {"model": TinyModel().state_dict()})
    route = Route(data, send_only=len(data) // 2)
    with FileServer({"/w.pth": route}) as server:
        url = server.url("/w.pth")
        with pytest.raises(CheckpointDownloadError, match=rf"{url} stopped after {len(data) // 2} of {len(data)} bytes"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
        assert not os.path.exists(cache_path_for_url(url))
        assert temp_files(cache_dir) == []

        route.send_only = None
        Mask2FormerCheckpointer(TinyModel()).load(url)
        assert server.requests["/w.pth"] == 2
    assert open(cache_path_for_url(url), "rb").read() == data


def test_http_error_names_the_url_and_status(cache_dir):
    with FileServer({}) as server:
        url = server.url("/missing/model.pth")
        with pytest.raises(CheckpointDownloadError, match=rf"Could not download {url}: HTTP 404"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
    assert not os.path.exists(cache_path_for_url(url))


def test_web_page_served_instead_of_a_checkpoint_is_refused(cache_dir):
    page = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    with FileServer({"/w.pth": Route(page, content_type="text/html")}) as server:
        url = server.url("/w.pth")
        with pytest.raises(CheckpointDownloadError, match="returned a web page"):
            Mask2FormerCheckpointer(TinyModel()).load(url)
    assert not os.path.exists(cache_path_for_url(url)) and temp_files(cache_dir) == []


def test_unreachable_server_error_names_the_url(cache_dir):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(CheckpointDownloadError, match=f"Could not reach {url}"):
        Mask2FormerCheckpointer(TinyModel()).load(url)


# --- weights-only loading ---------------------------------------------------------------------


class _WritesFileWhenUnpickled:
    """Unpickling this runs open(path, "w"): the kind of code a malicious checkpoint carries."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pth_with_pickled_objects_is_refused_by_default_naming_the_opt_in(tmp_path, cache_dir):
    marker = tmp_path / "code_ran"
    path = tmp_path / "legacy.pth"
    torch.save({"model": TinyModel().state_dict(), "payload": _WritesFileWhenUnpickled(str(marker))}, path)

    model = TinyModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsafeCheckpointError, match=r"legacy\.pth.*io\.open.*M2F_DINAT_ALLOW_PICKLE=1"):
        Mask2FormerCheckpointer(model).load(str(path))
    assert not marker.exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pth_with_pickled_objects_loads_with_the_opt_in(tmp_path, cache_dir, monkeypatch):
    source = TinyModel()
    path = tmp_path / "legacy.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)

    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        Mask2FormerCheckpointer(TinyModel()).load(str(path))

    by_flag = TinyModel()
    assert Mask2FormerCheckpointer(by_flag, allow_pickle=True).load(str(path))["args"].lr == 0.1
    assert_same_weights(by_flag, source)

    monkeypatch.setenv("M2F_DINAT_ALLOW_PICKLE", "1")
    by_env = TinyModel()
    Mask2FormerCheckpointer(by_env).load(str(path))
    assert_same_weights(by_env, source)


def test_pth_holding_numpy_arrays_loads_weights_only(tmp_path, cache_dir):
    source = TinyModel()
    path = tmp_path / "numpy.pth"
    torch.save({"model": {k: v.numpy() for k, v in source.state_dict().items()}, "step": np.int64(3)}, path)
    model = TinyModel()
    assert Mask2FormerCheckpointer(model).load(str(path))["step"] == 3
    assert_same_weights(model, source)


def write_converted_backbone(path, model: TinyModel, protocol: int):
    """A .pkl as the DiNAT-to-detectron2 converter writes it: backbone names without 'backbone.'."""
    backbone = {k: v.numpy() for k, v in model.backbone.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": backbone, "__author__": "DiNAT", "matching_heuristics": True}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_converted_backbone_pkl_loads_by_name_matching(tmp_path, cache_dir, caplog, protocol):
    source = TinyModel()
    path = tmp_path / "dinat_backbone.pkl"
    write_converted_backbone(path, source, protocol)

    model = TinyModel()
    head_before = model.sem_seg_head.predictor.class_embed.weight.detach().clone()
    checkpointer = Mask2FormerCheckpointer(model)
    with caplog.at_level(logging.WARNING):
        checkpointer.load(str(path))

    assert_same_weights(model.backbone, source.backbone)
    assert torch.equal(model.sem_seg_head.predictor.class_embed.weight, head_before)
    report = checkpointer.last_report
    assert report.missing == ("sem_seg_head.predictor.class_embed.bias", "sem_seg_head.predictor.class_embed.weight")
    assert report.unexpected == () and report.shape_mismatches == ()
    assert "sem_seg_head.predictor.class_embed.{bias,weight}" in caplog.text


def test_converted_backbone_pkl_reports_a_kernel_size_mismatch(tmp_path, cache_dir):
    path = tmp_path / "k5.pkl"
    write_converted_backbone(path, TinyModel(depth=2, kernel=5), protocol=4)
    checkpointer = Mask2FormerCheckpointer(TinyModel(depth=2, kernel=3))
    checkpointer.load(str(path))
    report = checkpointer.last_report
    assert [m[0] for m in report.shape_mismatches] == [
        "backbone.levels.0.blocks.0.attn.rpb", "backbone.levels.0.blocks.1.attn.rpb"
    ]
    assert report.unexpected == ()
    assert "kernel size 5 in the checkpoint but 3 in the model" in report.format()


def test_pkl_with_other_objects_is_refused_by_default(tmp_path, cache_dir):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "args": argparse.Namespace(lr=1)}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"odd\.pkl.*argparse\.Namespace.*M2F_DINAT_ALLOW_PICKLE=1"):
        load_checkpoint_file(str(path))
    assert load_checkpoint_file(str(path), allow_pickle=True)["args"].lr == 1


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
    manifest = json.loads((reference_dir / "published_state_dict_manifest.json").read_text())
    return {name: torch.empty(shape, device="meta") for name, shape in manifest[config].items()}


COCO_PANOPTIC = "configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml"


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
    ade_semantic = COCO_PANOPTIC.replace("coco/panoptic", "ade20k/semantic").replace("100ep", "160k")
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
    assert len(imagenet.PUBLISHED_CONFIGS) == 8
    for config in imagenet.PUBLISHED_CONFIGS:
        rpb = imagenet.meta_model(config).state_dict()["backbone.levels.0.blocks.0.attn.rpb"]
        assert tuple(rpb.shape) == (6, 21, 21), config


@meta_load
@pytest.mark.parametrize("config", imagenet.PUBLISHED_CONFIGS)
def test_imagenet_pth_in_every_layout_loads_into_the_backbone_of_each_published_config(config, compact_files, cache_dir):
    model = imagenet.meta_model(config)
    for layout in imagenet.LAYOUTS:
        checkpointer = Mask2FormerCheckpointer(model, config_name=config)
        assert checkpointer.load(str(compact_files[imagenet.KERNEL_11, layout])) == (
            {} if layout.startswith("bare") else {"epoch": 300}
        )
        assert_pretraining_report(checkpointer.last_report, model, config)


@meta_load
@pytest.mark.parametrize("config", imagenet.PUBLISHED_CONFIGS)
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
    config = imagenet.PUBLISHED_CONFIGS[0]
    with caplog.at_level(logging.INFO):
        Mask2FormerCheckpointer(imagenet.meta_model(config), config_name=config).load(
            str(compact_files[imagenet.KERNEL_11, "bare"])
        )
    records = [r for r in caplog.records if "ImageNet DiNAT classification checkpoint" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert "the transformer decoder" in records[0].getMessage()


@meta_load
def test_imagenet_pretraining_is_refused_for_strict_loading(compact_files, cache_dir):
    config = imagenet.PUBLISHED_CONFIGS[0]
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
    config = "configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml"
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
    from detectron2.modeling import build_model

    from mask2former_dinat.config import get_cfg

    config = "configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml"
    state = imagenet.state(imagenet.KERNEL_11)
    path = tmp_path / imagenet.KERNEL_11
    torch.save(state, path)
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to_empty(device="cpu")  # real memory, without the initialisation's cost
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
