"""The built models match the published ones: same state-dict layout as the published
checkpoints, and the same outputs as the original code on the golden data
(../shared/reference/README.md defines the data and the tolerances)."""
import functools
import json

import pytest
import torch
from conftest import REFERENCE_DIR
from detectron2.modeling import build_model
from detectron2.structures import BitMasks

import mask2former_dinat  # noqa: F401  (registers the components)
from mask2former_dinat.config import get_cfg
from mask2former_dinat.modeling import maskformer_model  # noqa: F401  (registers MaskFormer)

_MANIFEST_FILE = REFERENCE_DIR / "published_state_dict_manifest.json"
MANIFEST = json.loads(_MANIFEST_FILE.read_text()) if _MANIFEST_FILE.is_file() else {}

STAGE_TOL = 1e-3
SEM_SEG_TOL = 2e-3
SEM_SEG_ARGMAX_AGREEMENT = 0.999
PANOPTIC_AGREEMENT = 0.995
INSTANCE_SCORE_TOL = 1e-4
INSTANCE_MASK_AGREEMENT = 0.995


def _max_abs_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------- layout


def test_manifest_covers_the_eight_published_configs():
    if not MANIFEST:
        pytest.fail(f"{_MANIFEST_FILE} not found; set M2F_DINAT_REFERENCE to the reference folder")
    assert len(MANIFEST) == 8


@pytest.mark.parametrize("config_path", sorted(MANIFEST))
def test_state_dict_names_and_shapes_equal_the_published_checkpoint(config_path):
    cfg = get_cfg()
    cfg.merge_from_file(config_path)
    cfg.MODEL.DEVICE = "meta"  # no memory, no initialisation cost
    with torch.device("meta"):
        model = build_model(cfg)
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
def _golden_run(name):
    """Build the golden's model, load its weights strictly, run every input; keep the
    backbone and predictor outputs of each run."""
    path = REFERENCE_DIR / f"golden_{name}_small.pth"
    if not path.is_file():
        pytest.fail(f"{path} not found; set M2F_DINAT_REFERENCE to the reference folder")
    golden = torch.load(path, weights_only=True)
    cfg = get_cfg()
    cfg.merge_from_file(golden["base_config"])
    cfg.merge_from_list([item for kv in golden["opts"].items() for item in kv])
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    incompatible = model.load_state_dict(golden["model"]["model"], strict=True)
    model.eval()

    captured = {}
    model.backbone.register_forward_hook(lambda m, i, out: captured.__setitem__("backbone", out))
    model.sem_seg_head.predictor.register_forward_hook(lambda m, i, out: captured.__setitem__("predictor", out))
    runs = []
    with torch.no_grad():
        for x in golden["inputs"]:
            output = model([x])[0]
            runs.append({"output": output, "backbone": captured["backbone"], "predictor": captured["predictor"]})
    return golden, runs, incompatible


@pytest.fixture(params=["panoptic", "semantic"])
def golden_run(request):
    return (request.param,) + _golden_run(request.param)


def test_golden_checkpoint_loads_with_no_missing_or_unexpected_keys(golden_run):
    name, _, _, incompatible = golden_run
    assert not incompatible.missing_keys and not incompatible.unexpected_keys, (name, incompatible)


@pytest.mark.parametrize("stage, keys", [("backbone", ["res2", "res3", "res4", "res5"]), ("predictor", ["pred_logits", "pred_masks"])])
def test_stage_outputs_match_golden(golden_run, stage, keys):
    name, golden, runs, _ = golden_run
    for i, run in enumerate(runs):
        for key in keys:
            expected = golden["stages"][stage][i][key]
            ours = run[stage][key]
            assert ours.shape == expected.shape, f"{name} input {i} {stage} {key}: shape {tuple(ours.shape)} != {tuple(expected.shape)}"
            diff = _max_abs_diff(ours, expected)
            assert diff <= STAGE_TOL, f"{name} input {i} {stage} {key}: max abs diff {diff:.3e} > {STAGE_TOL}"


def test_sem_seg_matches_golden(golden_run):
    name, golden, runs, _ = golden_run
    for i, (run, expected) in enumerate(zip(runs, golden["outputs"])):
        sem_seg = run["output"]["sem_seg"]
        assert sem_seg.shape[-2:] == expected["sem_seg_argmax"].shape, f"{name} input {i}: sem_seg size {tuple(sem_seg.shape)}"
        if "sem_seg_fp16" in expected:
            diff = _max_abs_diff(sem_seg, expected["sem_seg_fp16"])
            assert diff <= SEM_SEG_TOL, f"{name} input {i} sem_seg probabilities: max abs diff {diff:.3e} > {SEM_SEG_TOL}"
        agreement = (sem_seg.argmax(0) == expected["sem_seg_argmax"].long()).float().mean().item()
        assert agreement >= SEM_SEG_ARGMAX_AGREEMENT, f"{name} input {i} sem_seg argmax: {agreement:.4%} of pixels agree"


def test_panoptic_seg_matches_golden():
    golden, runs, _ = _golden_run("panoptic")
    for i, (run, expected) in enumerate(zip(runs, golden["outputs"])):
        seg, segments_info = run["output"]["panoptic_seg"]
        assert seg.shape == expected["panoptic_seg"].shape, f"input {i}: panoptic_seg size {tuple(seg.shape)}"
        agreement = (seg == expected["panoptic_seg"]).float().mean().item()
        assert agreement >= PANOPTIC_AGREEMENT, f"input {i} panoptic_seg: {agreement:.4%} of pixels agree"
        ours = {s["id"]: (s["category_id"], s["isthing"]) for s in segments_info}
        theirs = {s["id"]: (s["category_id"], s["isthing"]) for s in expected["segments_info"]}
        assert ours == theirs, f"input {i} segments (id: (category, isthing)): ours {ours}, golden {theirs}"


def _by_class_then_score(scores, classes):
    return sorted(range(len(scores)), key=lambda j: (int(classes[j]), float(scores[j])))


def test_instances_match_golden():
    golden, runs, _ = _golden_run("panoptic")
    for i, (run, expected) in enumerate(zip(runs, golden["outputs"])):
        ours, theirs = run["output"]["instances"], expected["instances"]
        assert len(ours) == len(theirs["scores"]), f"input {i}: {len(ours)} instances, golden {len(theirs['scores'])}"
        assert ours.image_size == tuple(theirs["pred_masks"].shape[-2:]), f"input {i}: image_size {ours.image_size}"
        # The original picks the top-k unsorted: pair instances by (class, score) instead of by position.
        our_order = _by_class_then_score(ours.scores, ours.pred_classes)
        their_order = _by_class_then_score(theirs["scores"], theirs["pred_classes"])
        our_classes = ours.pred_classes[our_order]
        assert torch.equal(our_classes, theirs["pred_classes"][their_order]), f"input {i}: classes differ"
        score_diff = _max_abs_diff(ours.scores[our_order], theirs["scores"][their_order])
        assert score_diff <= INSTANCE_SCORE_TOL, f"input {i} instance scores: max abs diff {score_diff:.3e}"
        agreement = (ours.pred_masks[our_order] == theirs["pred_masks"][their_order]).flatten(1).float().mean(1)
        worst = agreement.min().item()
        assert worst >= INSTANCE_MASK_AGREEMENT, f"input {i} instance masks: worst agrees on {worst:.4%} of pixels"


def test_instance_boxes_are_the_bounding_boxes_of_their_masks():
    # The original leaves pred_boxes at zero; ours are computed from the masks.
    _, runs, _ = _golden_run("panoptic")
    for run in runs:
        instances = run["output"]["instances"]
        expected = BitMasks(instances.pred_masks).get_bounding_boxes().tensor
        assert torch.equal(instances.pred_boxes.tensor, expected)
        assert (instances.pred_boxes.area() > 0).any()
