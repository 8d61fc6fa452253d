"""train_net.py's data options in this process: --check-data's report and exit status, training
refused on broken data or run without it (--skip-bad), options that cannot be used, and fine-tuning
from a checkpoint of another class count (the key report says only the classifier is re-initialised)."""
import json

import pytest
import torch
from detectron2.modeling import build_model
from helpers.configs import COCO_PANOPTIC, REPO, load_config
from helpers.dataset_writers import CUSTOM_CLASSES, write_custom_datasets
from helpers.train_net_script import TINY_TRAINING as TINY
from helpers.train_net_script import run_train_net

CONFIG = REPO / COCO_PANOPTIC
NUM_THINGS = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("M2F_DINAT_CACHE", str(root / "cache"))
        yield write_custom_datasets(root, num_images=2)


@pytest.fixture(scope="module")
def two_class_checkpoint(tmp_path_factory):
    """A checkpoint of the tiny model with 2 classes, as training on the coco_instances data makes."""
    cfg = load_config(COCO_PANOPTIC, *TINY, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(NUM_THINGS), "DATASETS.TEST", "()")
    path = tmp_path_factory.mktemp("weights") / "two_classes.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


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


def test_fine_tuning_from_a_checkpoint_of_another_class_count_reinitialises_only_the_classifier(
    two_class_checkpoint, data, tmp_path
):
    status, _ = run_train_net(  # the panoptic data has 4 classes
        "--config-file", CONFIG, "--datasets", data["yaml"], *TINY, "DATASETS.TRAIN", "('coco_panoptic_train',)",
        "DATASETS.TEST", "()", "MODEL.WEIGHTS", two_class_checkpoint, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", tmp_path,
    )
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


    fine_tuned = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert fine_tuned["sem_seg_head.predictor.class_embed.weight"].shape[0] == len(CUSTOM_CLASSES) + 1
