"""The small golden model of tests/reference: build it with its weights, run it, and list every
way its outputs differ from what the original code computed.

`mismatches(golden, runs)` is the parity check itself: the tests assert it finds nothing on our
model and that it does find something when a plausible slip is put into the model.
"""
import functools

import numpy as np
import torch
from detectron2.modeling import build_model

import mask2former_dinat  # noqa: F401  (registers the components)
from helpers.configs import load_config
from helpers.reference import load_torch

GOLDEN_FILE = "golden_panoptic_small.pth"

# What a faithful float32 implementation achieves here, with a small margin (measured maxima in
# tests/reference/README.md): max abs difference of the stage tensors...
STAGE_TOL = {"backbone": 1e-5, "predictor": 5e-5}
# ...pixels agreeing...
SEM_SEG_ARGMAX_AGREEMENT = 0.999
PANOPTIC_AGREEMENT = 0.995
INSTANCE_MASK_AGREEMENT = 0.995
# ...and instance scores.
INSTANCE_SCORE_TOL = 1e-5
STAGE_KEYS = {"backbone": ("res2", "res3", "res4", "res5"), "predictor": ("pred_logits", "pred_masks")}


def unpack_masks(packed):
    """Inverse of tests/reference/derive.py's pack_masks: bool [N, H, W]."""
    n, h, w = packed["shape"]
    return torch.from_numpy(np.unpackbits(packed["packed"].numpy(), axis=-1, count=w).astype(bool)).view(n, h, w)


@functools.lru_cache(maxsize=None)
def load_golden():
    golden = load_torch(GOLDEN_FILE)
    for output in golden["outputs"]:
        if "instances" in output:
            output["instances"]["pred_masks"] = unpack_masks(output["instances"]["pred_masks"])
        if "panoptic_seg" in output:
            output["panoptic_seg"] = output["panoptic_seg"].int()
    return golden


def golden_cfg(golden):
    cfg = load_config(golden["base_config"], *[item for kv in golden["opts"].items() for item in kv])
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def build_golden_model(golden):
    """The golden's model with its weights loaded strictly, in eval mode; returns (model, incompatible keys)."""
    model = build_model(golden_cfg(golden))
    incompatible = model.load_state_dict(golden["model"]["model"], strict=True)
    return model.eval(), incompatible


def run_golden(model, golden):
    """Run every golden input; per input: the model's output and its backbone and predictor outputs."""
    captured = {}
    hooks = [model.backbone.register_forward_hook(lambda m, i, out: captured.__setitem__("backbone", out)),
             model.sem_seg_head.predictor.register_forward_hook(lambda m, i, out: captured.__setitem__("predictor", out))]
    runs = []
    try:
        with torch.no_grad():
            for x in golden["inputs"]:
                output = model([x])[0]
                runs.append({"output": output, "backbone": captured["backbone"], "predictor": captured["predictor"]})
    finally:
        for hook in hooks:
            hook.remove()
    return runs


def _max_abs_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


def stage_mismatches(golden, runs, stage):
    found = []
    for i, run in enumerate(runs):
        for key in STAGE_KEYS[stage]:
            expected, ours = golden["stages"][stage][i][key], run[stage][key]
            if ours.shape != expected.shape:
                found.append(f"input {i} {stage} {key}: shape {tuple(ours.shape)} != {tuple(expected.shape)}")
                continue
            diff = _max_abs_diff(ours, expected)
            if diff > STAGE_TOL[stage]:
                found.append(f"input {i} {stage} {key}: max abs diff {diff:.3e} > {STAGE_TOL[stage]:g}")
    return found


def float16_steps(ours, golden_fp16):
    """Largest distance, in float16 steps (ulps), between ours rounded to float16 and the float16 golden."""
    a, b = ours.to(torch.float16), golden_fp16.to(torch.float16)
    # float16 bit patterns of non-negative values are ordered like the values: their difference counts steps
    steps = (a.view(torch.int16).int() - b.view(torch.int16).int()).abs()
    return int(steps.max())


def sem_seg_mismatches(golden, runs):
    found = []
    for i, (run, expected) in enumerate(zip(runs, golden["outputs"])):
        sem_seg = run["output"]["sem_seg"]
        if sem_seg.shape[-2:] != expected["sem_seg_argmax"].shape:
            found.append(f"input {i}: sem_seg size {tuple(sem_seg.shape)}")
            continue
        if "sem_seg_fp16" in expected:
            s = expected["sem_seg_fp16_stride"]
            steps = float16_steps(sem_seg[:, ::s, ::s], expected["sem_seg_fp16"])
            if steps > 1:
                found.append(f"input {i} sem_seg probabilities: {steps} float16 steps from the golden (> 1)")
        agreement = (sem_seg.argmax(0) == expected["sem_seg_argmax"].long()).float().mean().item()
        if agreement < SEM_SEG_ARGMAX_AGREEMENT:
            found.append(f"input {i} sem_seg argmax: {agreement:.4%} of pixels agree")
    return found


def panoptic_mismatches(golden, runs):
    found = []
    for i, (run, expected) in enumerate(zip(runs, golden["outputs"])):
        seg, segments_info = run["output"]["panoptic_seg"]
        if seg.shape != expected["panoptic_seg"].shape:
            found.append(f"input {i}: panoptic_seg size {tuple(seg.shape)}")
            continue
        agreement = (seg == expected["panoptic_seg"]).float().mean().item()
        if agreement < PANOPTIC_AGREEMENT:
            found.append(f"input {i} panoptic_seg: {agreement:.4%} of pixels agree")
        ours = {s["id"]: (s["category_id"], s["isthing"]) for s in segments_info}
        theirs = {s["id"]: (s["category_id"], s["isthing"]) for s in expected["segments_info"]}
        if ours != theirs:
            found.append(f"input {i} segments (id: (category, isthing)): ours {ours}, golden {theirs}")
    return found


def _by_class_then_score(scores, classes):
    return sorted(range(len(scores)), key=lambda j: (int(classes[j]), float(scores[j])))


def instance_mismatches(golden, runs):
    found = []
    for i, (run, expected) in enumerate(zip(runs, golden["outputs"])):
        ours, theirs = run["output"]["instances"], expected["instances"]
        if len(ours) != len(theirs["scores"]):
            found.append(f"input {i}: {len(ours)} instances, golden {len(theirs['scores'])}")
            continue
        if ours.image_size != tuple(theirs["pred_masks"].shape[-2:]):
            found.append(f"input {i}: image_size {ours.image_size}")
            continue
        # The original picks the top-k unsorted: pair instances by (class, score) instead of by position.
        our_order = _by_class_then_score(ours.scores, ours.pred_classes)
        their_order = _by_class_then_score(theirs["scores"], theirs["pred_classes"])
        if not torch.equal(ours.pred_classes[our_order], theirs["pred_classes"][their_order]):
            found.append(f"input {i}: instance classes differ")
            continue
        score_diff = _max_abs_diff(ours.scores[our_order], theirs["scores"][their_order])
        if score_diff > INSTANCE_SCORE_TOL:
            found.append(f"input {i} instance scores: max abs diff {score_diff:.3e} > {INSTANCE_SCORE_TOL:g}")
        agreement = (ours.pred_masks[our_order] == theirs["pred_masks"][their_order]).flatten(1).float().mean(1)
        if agreement.min().item() < INSTANCE_MASK_AGREEMENT:
            found.append(f"input {i} instance masks: worst agrees on {agreement.min().item():.4%} of pixels")
    return found


CHECKS = {
    "backbone": functools.partial(stage_mismatches, stage="backbone"),
    "predictor": functools.partial(stage_mismatches, stage="predictor"),
    "sem_seg": sem_seg_mismatches,
    "panoptic_seg": panoptic_mismatches,
    "instances": instance_mismatches,
}


def mismatches(golden, runs):
    """{check name: [what differs]} for every check that found a difference."""
    found = {name: check(golden, runs) for name, check in CHECKS.items()}
    return {name: problems for name, problems in found.items() if problems}
