"""train_net.py --datasets FILE.yaml end to end, in this process: a tiny model trains for two
iterations and is evaluated on each of the three formats under one published config (the COCO
panoptic one), whose class count, mapper and outputs are fitted to the data; the trained model
evaluates from its saved config with the custom class names."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import COCO_PANOPTIC, REPO
from helpers.dataset_writers import CUSTOM_CLASSES, write_custom_datasets
from helpers.train_net_script import TINY_TRAINING as TINY
from helpers.train_net_script import run_train_net
from PIL import Image

CONFIG = REPO / COCO_PANOPTIC
NUM_THINGS = 2  # brick, wheel: the classes of the coco_instances datasets


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("M2F_DINAT_CACHE", str(root / "cache"))
        yield write_custom_datasets(root, num_images=2)


def train(data, fmt, output_dir, *opts):
    return run_train_net(
        "--config-file", CONFIG, "--datasets", data["yaml"], *TINY,
        "DATASETS.TRAIN", f"('{fmt}_train',)", "DATASETS.TEST", f"('{fmt}_val',)", "OUTPUT_DIR", output_dir, *opts,
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """format -> (output folder, the final evaluation's metrics as "task/metric": value) of a
    two-iteration training, run on first use."""
    runs = {}

    def get(fmt):
        if fmt not in runs:
            out = tmp_path_factory.mktemp(fmt)
            status, _ = train(data, fmt, out)
            assert status is None
            metrics = {}
            for line in (out / "metrics.json").read_text().splitlines():
                metrics.update(json.loads(line))
            runs[fmt] = out, metrics
        return runs[fmt]

    return get


@pytest.mark.parametrize(
    "fmt, num_classes, mapper, metric, per_class",
    [
        ("coco_instances", NUM_THINGS, "coco_instance_lsj", "segm/AP", "segm/AP-"),
        ("coco_panoptic", len(CUSTOM_CLASSES), None, "panoptic_seg/PQ", None),
        ("sem_seg", len(CUSTOM_CLASSES), "mask_former_semantic", "sem_seg/mIoU", "sem_seg/IoU-"),
    ],
)
def test_each_format_trains_and_evaluates_with_the_config_fitted_to_its_classes(trained, fmt, num_classes, mapper, metric, per_class):
    out, results = trained(fmt)
    log = (out / "log.txt").read_text()
    assert f"MODEL.SEM_SEG_HEAD.NUM_CLASSES: 133 in the config does not fit the {num_classes} classes of '{fmt}_train'; set to {num_classes}" in log
    if mapper:
        assert f"INPUT.DATASET_MAPPER_NAME: 'coco_panoptic_lsj' in the config does not fit the {fmt} dataset '{fmt}_train'; set to '{mapper}'" in log
    else:
        assert "INPUT.DATASET_MAPPER_NAME" not in log
    model = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    assert model["sem_seg_head.predictor.class_embed.weight"].shape[0] == num_classes + 1
    assert 0.0 <= results[metric] <= 100.0
    if per_class:  # per-class results carry the dataset's class names
        assert f"{per_class}brick" in results and f"{per_class}wheel" in results
    config = (out / "config.yaml").read_text()
    assert f"NUM_CLASSES: {num_classes}" in config


def test_coco_panoptic_training_reads_semantic_pngs_derived_from_the_panoptic_ones(trained, data):
    out, results = trained("coco_panoptic")
    for metric in ("panoptic_seg/PQ", "segm/AP", "sem_seg/mIoU"):  # PQ, AP over the things, mIoU
        assert 0.0 <= results[metric] <= 100.0
    cache = Path(data["yaml"]).parent / "cache" / "derived"
    for split in ("train", "val"):
        (folder,) = cache.glob(f"coco_panoptic_{split}-*")
        for record in data["coco_panoptic", split]["records"]:
            png = folder / "sem_seg" / Path(record["pan_seg_file_name"]).name
            assert np.array_equal(np.asarray(Image.open(png)), record["semantic"])


def test_the_fine_tuned_model_evaluates_from_its_saved_config_with_the_custom_class_names(trained, data, tmp_path):
    out, _ = trained("sem_seg")
    status, results = run_train_net(
        "--config-file", out / "config.yaml", "--datasets", data["yaml"], "--eval-only",
        "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", tmp_path,
    )
    assert status is None
    assert {f"IoU-{name}" for name in CUSTOM_CLASSES} <= set(results["sem_seg"])
    assert "fits the model" in (tmp_path / "log.txt").read_text()
