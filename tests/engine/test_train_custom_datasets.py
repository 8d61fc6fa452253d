"""train_net.py --datasets FILE.yaml end to end, in this process: a tiny model trains for two
iterations and is evaluated on each of the three formats under one published config (the COCO
panoptic one), whose class count, mapper and outputs are fitted to the data; fine-tuning from a
checkpoint of another class count; broken data refused or, with --skip-bad, left out."""
import importlib.util
import json
from pathlib import Path

import numpy as np

import pytest
import torch
from detectron2.engine import default_argument_parser
from PIL import Image
from helpers.configs import REPO, published_config, tiny_model_opts
from helpers.dataset_writers import CUSTOM_CLASSES, write_custom_datasets

CONFIG = REPO / published_config("coco", "panoptic")
TINY = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    *tiny_model_opts(num_heads=(1, 1, 2, 2), train_num_points=256, DROP_PATH_RATE=0.0),
    "INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.CROP.SIZE", "(48, 48)", "INPUT.COLOR_AUG_SSD", "False",
    "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1000",
    "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
]
NUM_THINGS = 2  # brick, wheel: the classes of the coco_instances datasets


def _load_train_net():
    spec = importlib.util.spec_from_file_location("m2f_dinat_train_net", REPO / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_train_net()


def run_train_net(*argv):
    """What `python train_net.py argv...` does with one process: (exit status or None, main's result)."""
    args = train_net._add_arguments(default_argument_parser()).parse_args([str(a) for a in argv])
    status = train_net.check_data(args)
    if status is not None:
        return status, None
    return None, train_net.main(args)


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


def test_fine_tuning_from_a_checkpoint_of_another_class_count_reinitialises_only_the_classifier(trained, data, tmp_path):
    source, _ = trained("coco_instances")  # 2 classes; the panoptic data has 4
    status, _ = train(data, "coco_panoptic", tmp_path, "MODEL.WEIGHTS", source / "model_final.pth", "SOLVER.MAX_ITER", "1")
    assert status is None
    log = (tmp_path / "log.txt").read_text()
    assert f"has {NUM_THINGS} classes, the model {len(CUSTOM_CLASSES)} (MODEL.SEM_SEG_HEAD.NUM_CLASSES)" in log
    assert "the classifier (class_embed) is re-initialised" in log
    assert (
        "shape differs, not loaded (3): criterion.empty_weight (checkpoint [3], model [5]); "
        "sem_seg_head.predictor.class_embed.bias (checkpoint [3], model [5]); "
        "sem_seg_head.predictor.class_embed.weight (checkpoint [3, 32], model [5, 32])\n"
    ) in log
    assert "missing in checkpoint" not in log and "not in model" not in log


def test_check_data_prints_counts_per_dataset_and_exits_zero_on_clean_data(data, capsys):
    status, _ = run_train_net("--datasets", data["yaml"], "--check-data")
    assert status == 0
    out = capsys.readouterr().out
    assert "coco_instances_train (coco_instances, " in out and "2 images, 6 annotations, 2 categories: no problems" in out
    assert "sem_seg_val (sem_seg, " in out and "2 images, 2 label PNGs, 4 categories: no problems" in out
    assert out.count("no problems") == 6


@pytest.fixture
def broken(data, tmp_path):
    """The coco_instances train split with one unreadable image out of three."""
    ann = json.loads(open(data["coco_instances", "train"]["json_file"]).read())
    image = dict(ann["images"][0], id=99, file_name="broken.jpg")
    ann["images"].append(image)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    for name in ("000000001000.jpg", "000000001001.jpg"):
        (tmp_path / name).symlink_to(f"{data['coco_instances', 'train']['image_dir']}/{name}")
    (tmp_path / "train.json").write_text(json.dumps(ann))
    yaml = tmp_path / "broken.yaml"
    yaml.write_text("broken_train: {format: coco_instances, json: train.json, images: .}\n")
    return yaml


def test_training_on_broken_data_is_refused_with_the_report(broken, tmp_path, capsys):
    status, _ = run_train_net(
        "--config-file", CONFIG, "--datasets", broken, *TINY, "DATASETS.TRAIN", "('broken_train',)",
        "DATASETS.TEST", "()", "OUTPUT_DIR", tmp_path / "out",
    )
    assert status == 1
    err = capsys.readouterr().err
    assert f"unreadable image: {tmp_path / 'broken.jpg'} (image 99): cannot identify image file" in err
    assert "Training refused: the data check found problems in broken_train (above)" in err
    assert "pass --skip-bad to train without the 1 image(s)" in err
    assert not (tmp_path / "out").exists()


def test_skip_bad_trains_without_the_broken_images_and_counts_them_in_the_log(broken, tmp_path):
    status, _ = run_train_net(
        "--config-file", CONFIG, "--datasets", broken, "--skip-bad", *TINY, "DATASETS.TRAIN", "('broken_train',)",
        "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", tmp_path / "out",
    )
    assert status is None
    log = (tmp_path / "out" / "log.txt").read_text()
    assert f"--skip-bad: leaving out 1 of the 3 images of dataset 'broken_train' (problems found by the data check): {tmp_path / 'broken.jpg'}" in log
    assert (tmp_path / "out" / "model_final.pth").is_file()


def test_check_data_on_broken_data_prints_the_problems_and_exits_one(broken, capsys):
    status, _ = run_train_net("--datasets", broken, "--check-data")
    assert status == 1
    out = capsys.readouterr().out
    assert out.startswith("broken_train (coco_instances, ") and "3 images, 6 annotations, 2 categories: 1 problem(s) (1 unreadable image)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--check-data"], "--check-data checks the datasets of a datasets file: pass --datasets FILE.yaml"),
        (["--datasets", "nowhere.yaml"], "cannot read datasets file nowhere.yaml: No such file or directory"),
        (["--config-file", CONFIG, "--datasets", "{yaml}", "DATASETS.TRAIN", "('sem_seg_train',)", "DATASETS.TEST", "('coco_instances_val',)"],
         "with this config: datasets 'sem_seg_train' and 'coco_instances_val' have different classes"),
    ],
)
def test_data_options_that_cannot_be_used_stop_with_status_two(data, argv, message, capsys):
    argv = [data["yaml"] if a == "{yaml}" else a for a in argv]
    status, _ = run_train_net(*argv)
    assert status == 2
    assert message in capsys.readouterr().err


def test_the_fine_tuned_model_evaluates_from_its_saved_config_with_the_custom_class_names(trained, data, tmp_path):
    out, _ = trained("sem_seg")
    status, results = run_train_net(
        "--config-file", out / "config.yaml", "--datasets", data["yaml"], "--eval-only",
        "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", tmp_path,
    )
    assert status is None
    assert {f"IoU-{name}" for name in CUSTOM_CLASSES} <= set(results["sem_seg"])
    assert "fits the model" in (tmp_path / "log.txt").read_text()
