"""Fine-tuning from a checkpoint of another class count: every weight but the classifier loads,
class_embed keeps its fresh initialisation, and the key report says exactly that; strict loading
(evaluation, the demo) still refuses such a checkpoint."""
import pytest
import torch
from detectron2.modeling import build_model
from helpers.configs import tiny_cfg

from mask2former_dinat.checkpoint import Mask2FormerCheckpointer
from mask2former_dinat.checkpoint.key_report import CheckpointMismatchError

CLASSIFIER = {"sem_seg_head.predictor.class_embed.weight", "sem_seg_head.predictor.class_embed.bias", "criterion.empty_weight"}


def _model(num_classes):
    cfg = tiny_cfg("configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml",
                   "MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                   "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes))
    return build_model(cfg)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A checkpoint of a 7-class model (standing in for a published one)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "published.pth"
    torch.save({"model": _model(7).state_dict()}, path)
    return path


def test_everything_but_the_classifier_loads_and_the_classifier_keeps_its_initialisation(published):
    model = _model(3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = Mask2FormerCheckpointer(model)
    checkpointer.load(str(published))
    report = checkpointer.last_report
    assert {k for k, _, _ in report.shape_mismatches} == CLASSIFIER
    assert not report.missing and not report.unexpected and report.only_classifier_differs
    assert report.loaded == report.model_keys - 3
    saved = torch.load(published, weights_only=True)["model"]
    for key, value in model.state_dict().items():
        if key in CLASSIFIER:
            assert torch.equal(value, initial[key]), key
        else:
            assert torch.equal(value, saved[key]), key
    assert model.criterion.empty_weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])  # the config's NO_OBJECT_WEIGHT
    headline = report.headline()
    assert headline == (
        f"Checkpoint {published} has 7 classes, the model 3 (MODEL.SEM_SEG_HEAD.NUM_CLASSES): {report.model_keys - 3} of "
        f"{report.model_keys} keys loaded; the classifier (class_embed) is re-initialised and the criterion's class "
        "weights are set from the config; nothing else is left out."
    )


def test_a_checkpoint_that_differs_beyond_the_classifier_is_not_reported_as_fine_tuning(published):
    model = _model(3)
    saved = torch.load(published, weights_only=True)["model"]
    del saved["sem_seg_head.predictor.query_feat.weight"]
    path = published.parent / "less.pth"
    torch.save({"model": saved}, path)
    checkpointer = Mask2FormerCheckpointer(model)
    checkpointer.load(str(path))
    assert not checkpointer.last_report.only_classifier_differs
    assert checkpointer.last_report.headline().startswith(f"Checkpoint {path} does not fit the model: 1 missing key, 3 keys with another shape")


def test_strict_loading_still_refuses_another_class_count(published):
    with pytest.raises(CheckpointMismatchError, match="Strict loading: nothing was loaded"):
        Mask2FormerCheckpointer(_model(3), strict=True).load(str(published))
