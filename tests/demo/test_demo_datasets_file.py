"""demo/demo.py --datasets FILE.yaml: a model fine-tuned on a user's dataset is drawn with that
dataset's class names (recorded from detectron2's Visualizer as it draws them)."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer
from helpers.configs import COCO_PANOPTIC, REPO, load_config, tiny_model_opts
from helpers.dataset_writers import CUSTOM_CLASSES, write_custom_datasets
from helpers.demo_script import load_demo_script

demo_cli = load_demo_script()

TINY = [
    *tiny_model_opts(), "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "96",
    # a random model is never confident: let every query through so that segments appear
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("M2F_DINAT_CACHE", str(root / "cache"))
        yield write_custom_datasets(root, splits=("val",))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight checkpoint of the tiny model with the 4 custom classes."""
    torch.manual_seed(0)
    cfg = load_config(COCO_PANOPTIC, *TINY, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4", "DATASETS.TEST", "()")
    path = tmp_path_factory.mktemp("weights") / "fine_tuned.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


@pytest.fixture
def drawn_texts(monkeypatch):
    texts = []
    original = Visualizer.draw_text

    def recording(self, text, *args, **kwargs):
        texts.append(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(Visualizer, "draw_text", recording)
    return texts


def run_demo(data, weights, output, *opts):
    image = data["coco_panoptic", "val"]["records"][0]["file_name"]
    return demo_cli.main([
        "--config-file", str(REPO / COCO_PANOPTIC), "--datasets", data["yaml"], "--input", image,
        "--output", str(output), "--opts", "MODEL.WEIGHTS", str(weights), *TINY, *opts,
    ])


@pytest.mark.parametrize("dataset, task", [("coco_panoptic_val", "panoptic"), ("sem_seg_val", "semantic")])
def test_the_demo_draws_the_class_names_of_the_datasets_file(data, weights, tmp_path, drawn_texts, dataset, task, capsys):
    status = run_demo(data, weights, tmp_path / "vis.png", "DATASETS.TEST", f"('{dataset}',)")
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "vis.png").is_file()
    assert drawn_texts and set(drawn_texts) <= set(CUSTOM_CLASSES), drawn_texts
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES: 133 in the config does not fit the 4 classes" in capsys.readouterr().err


def test_a_datasets_file_whose_datasets_differ_in_classes_needs_datasets_test(data, weights, tmp_path, capsys):
    assert run_demo(data, weights, tmp_path / "vis.png") == 2
    assert ("the datasets of the datasets file have different classes: name the one the model was trained on with "
            "DATASETS.TEST (one of coco_instances_val, coco_panoptic_val, sem_seg_val)") in capsys.readouterr().err


def test_a_file_of_one_class_list_is_used_without_naming_a_dataset(data, weights, tmp_path, drawn_texts, capsys):
    yaml = tmp_path / "one.yaml"
    lines = [l for l in open(data["yaml"]).read().splitlines() if l.startswith("sem_seg_val")]
    yaml.write_text(lines[0].replace("sem_seg/", f"{data['yaml'].rsplit('/', 1)[0]}/sem_seg/") + "\n")
    status = run_demo(dict(data, yaml=str(yaml)), weights, tmp_path / "vis.png")
    assert status == 0
    assert "DATASETS.TEST: ('coco_2017_val_panoptic_with_sem_seg',) in the config does not fit the datasets file" in capsys.readouterr().err
    assert drawn_texts and set(drawn_texts) <= set(CUSTOM_CLASSES)
