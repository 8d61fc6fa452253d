"""mask2former_dinat.solver: parameter groups, gradient clipping, learning-rate schedules."""
import math

import pytest
import torch
from torch import nn

from mask2former_dinat.config import get_cfg
from mask2former_dinat.solver import (
    apply_scheduled_lr,
    build_lr_scheduler,
    build_optimizer,
    get_optimizer_param_groups,
)

BASE_LR = 1e-4


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.rpb = nn.Parameter(torch.zeros(2, 5, 5))  # DiNAT's relative positional bias


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _Attention()
        self.norm = nn.LayerNorm(4)
        self.bn = nn.BatchNorm2d(4)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


class _Head(nn.Module):
    def __init__(self, shared):
        super().__init__()
        self.query_embed = nn.Embedding(3, 4)
        self.level_embed = nn.Parameter(torch.zeros(3, 4))  # a plain parameter, not an nn.Embedding
        self.gn = nn.GroupNorm(2, 4)
        self.class_embed = nn.Linear(4, 5)
        self.shared = shared


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.sem_seg_head = _Head(self.backbone.attn.qkv)


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = BASE_LR
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.001
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.002
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    cfg.SOLVER.merge_from_list([x for item in solver.items() for x in item])
    return cfg


def _hyperparams_by_name(model, groups):
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    return {name: by_id.get(id(p)) for name, p in model.named_parameters(remove_duplicate=False)}


def test_groups_scale_backbone_lr_and_use_norm_and_embed_weight_decay():
    model = _Model()
    hp = _hyperparams_by_name(model, get_optimizer_param_groups(_cfg(), model))
    bb, wd, wd_norm, wd_embed = BASE_LR * 0.1, 0.05, 0.001, 0.002
    expected = {
        "backbone.attn.qkv.weight": (bb, wd),
        "backbone.attn.qkv.bias": (bb, wd),
        "backbone.attn.rpb": (bb, wd_embed),
        "backbone.norm.weight": (bb, wd_norm),
        "backbone.norm.bias": (bb, wd_norm),
        "backbone.bn.weight": (bb, wd_norm),
        "backbone.absolute_pos_embed": (bb, wd_embed),
        "sem_seg_head.query_embed.weight": (BASE_LR, wd_embed),
        "sem_seg_head.level_embed": (BASE_LR, wd),
        "sem_seg_head.gn.weight": (BASE_LR, wd_norm),
        "sem_seg_head.class_embed.weight": (BASE_LR, wd),
        "sem_seg_head.class_embed.bias": (BASE_LR, wd),
    }
    for name, value in expected.items():
        assert hp[name] == pytest.approx(value), name


def test_groups_leave_out_frozen_params_and_list_shared_params_once():
    model = _Model()
    groups = get_optimizer_param_groups(_cfg(), model)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params})
    assert not any(p is model.backbone.frozen.weight for p in params)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in params} == trainable
    # Equal hyperparameters are merged: fewer groups than parameters.
    assert len(groups) == len({(g["lr"], g["weight_decay"]) for g in groups}) < len(params)


def test_bias_settings_override_bias_params():
    model = _Model()
    hp = _hyperparams_by_name(model, get_optimizer_param_groups(_cfg(BIAS_LR_FACTOR=2.0, WEIGHT_DECAY_BIAS=0.0), model))
    assert hp["sem_seg_head.class_embed.bias"] == pytest.approx((2 * BASE_LR, 0.0))
    assert hp["backbone.norm.bias"] == pytest.approx((2 * BASE_LR * 0.1, 0.0))
    assert hp["sem_seg_head.class_embed.weight"] == pytest.approx((BASE_LR, 0.05))


def test_optimizer_kind_follows_config():
    model = _Model()
    assert isinstance(build_optimizer(_cfg(OPTIMIZER="ADAMW"), model), torch.optim.AdamW)
    sgd = build_optimizer(_cfg(OPTIMIZER="SGD", MOMENTUM=0.8), model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), model)


def _sgd_update(cfg):
    """One plain-SGD step (lr 1) on a two-parameter model with known gradients: the update."""
    torch.manual_seed(0)
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(3))
    model.b = nn.Parameter(torch.zeros(4))
    grads = {"a": torch.tensor([3.0, 0.0, -4.0]), "b": torch.tensor([1.0, 2.0, 2.0, 0.0])}
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 1.0, 0.0, 0.0
    optimizer = build_optimizer(cfg, model)
    for name, g in grads.items():
        getattr(model, name).grad = g.clone()
    optimizer.step()
    return {name: -getattr(model, name).detach() for name in grads}, grads


def test_full_model_clipping_scales_all_gradients_by_one_factor():
    cfg = _cfg(OPTIMIZER="SGD")
    cfg.SOLVER.CLIP_GRADIENTS.merge_from_list(["ENABLED", True, "CLIP_TYPE", "full_model", "CLIP_VALUE", 0.5])
    update, grads = _sgd_update(cfg)
    total_norm = math.sqrt(5.0**2 + 3.0**2)  # |a| = 5, |b| = 3
    for name, g in grads.items():
        torch.testing.assert_close(update[name], g * (0.5 / total_norm), rtol=1e-5, atol=1e-7)


def test_full_model_clipping_uses_norm_type():
    cfg = _cfg(OPTIMIZER="SGD")
    cfg.SOLVER.CLIP_GRADIENTS.merge_from_list(
        ["ENABLED", True, "CLIP_TYPE", "full_model", "CLIP_VALUE", 1.0, "NORM_TYPE", 1.0]
    )
    update, _ = _sgd_update(cfg)
    assert sum(u.abs().sum() for u in update.values()).item() == pytest.approx(1.0, rel=1e-5)


def test_no_clipping_when_disabled_and_per_parameter_clipping_for_norm_type():
    update, grads = _sgd_update(_cfg(OPTIMIZER="SGD"))
    for name, g in grads.items():
        torch.testing.assert_close(update[name], g)

    cfg = _cfg(OPTIMIZER="SGD")
    cfg.SOLVER.CLIP_GRADIENTS.merge_from_list(["ENABLED", True, "CLIP_TYPE", "norm", "CLIP_VALUE", 1.0])
    update, grads = _sgd_update(cfg)
    for name, g in grads.items():  # each parameter's gradient clipped to norm 1 on its own
        torch.testing.assert_close(update[name], g / g.norm(), rtol=1e-5, atol=1e-7)


def test_bad_clipping_settings_are_rejected():
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.merge_from_list(["ENABLED", True, "CLIP_TYPE", "global"])
    with pytest.raises(ValueError, match="CLIP_TYPE"):
        build_optimizer(cfg, _Model())
    cfg.SOLVER.CLIP_GRADIENTS.merge_from_list(["CLIP_TYPE", "full_model", "CLIP_VALUE", 0.0])
    with pytest.raises(ValueError, match="CLIP_VALUE"):
        build_optimizer(cfg, _Model())


def _lrs_at(cfg, iterations):
    model = _Model()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    head = next(i for i, g in enumerate(optimizer.param_groups) if g["initial_lr"] == BASE_LR)
    backbone = next(i for i, g in enumerate(optimizer.param_groups) if g["initial_lr"] == pytest.approx(BASE_LR * 0.1))
    out, it = {}, 0
    for target in iterations:
        while it < target:
            optimizer.step()
            scheduler.step()
            it += 1
        out[target] = (optimizer.param_groups[head]["lr"], optimizer.param_groups[backbone]["lr"])
    return out


def test_poly_schedule_lr_at_iterations():
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=100, WARMUP_ITERS=0, POLY_LR_POWER=0.9)
    lrs = _lrs_at(cfg, [0, 1, 50, 99])
    for it, (head, backbone) in lrs.items():
        factor = (1 - it / 100) ** 0.9
        assert head == pytest.approx(BASE_LR * factor, rel=1e-6)
        assert backbone == pytest.approx(BASE_LR * 0.1 * factor, rel=1e-6)


def test_multistep_schedule_with_linear_warmup_lr_at_iterations():
    cfg = _cfg(
        LR_SCHEDULER_NAME="WarmupMultiStepLR",
        MAX_ITER=100,
        STEPS=(50, 80),
        GAMMA=0.1,
        WARMUP_ITERS=10,
        WARMUP_FACTOR=0.001,
        WARMUP_METHOD="linear",
    )
    lrs = _lrs_at(cfg, [0, 5, 10, 49, 50, 79, 80, 99])
    expected = {0: 0.001, 5: 0.001 + 0.999 * 0.5, 10: 1.0, 49: 1.0, 50: 0.1, 79: 0.1, 80: 0.01, 99: 0.01}
    for it, factor in expected.items():
        assert lrs[it][0] == pytest.approx(BASE_LR * factor, rel=1e-6), it
        assert lrs[it][1] == pytest.approx(BASE_LR * 0.1 * factor, rel=1e-6), it


def test_unknown_schedule_is_rejected():
    cfg = _cfg(LR_SCHEDULER_NAME="OneCycle")
    with pytest.raises(ValueError, match="OneCycle"):
        build_lr_scheduler(cfg, build_optimizer(cfg, _Model()))


def _resumed(saved_cfg, cfg, saved_iterations):
    """An optimizer and schedule built from `cfg` that resume the state of `saved_iterations`
    iterations under `saved_cfg`."""
    model = _Model()
    optimizer = build_optimizer(saved_cfg, model)
    scheduler = build_lr_scheduler(saved_cfg, optimizer)
    for _ in range(saved_iterations):
        optimizer.step()
        scheduler.step()
    resumed_optimizer = build_optimizer(cfg, model)
    resumed = build_lr_scheduler(cfg, resumed_optimizer)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    apply_scheduled_lr(resumed)
    return resumed_optimizer, resumed


@pytest.mark.parametrize("name", ["WarmupPolyLR", "WarmupMultiStepLR"])
def test_resumed_schedule_follows_the_new_config_from_the_saved_iteration(name):
    short = _cfg(LR_SCHEDULER_NAME=name, MAX_ITER=4, STEPS=(3,))
    longer = _cfg(LR_SCHEDULER_NAME=name, MAX_ITER=10, STEPS=(8,))
    resumed_optimizer, resumed = _resumed(short, longer, 4)

    reference_optimizer = build_optimizer(longer, _Model())
    reference = build_lr_scheduler(longer, reference_optimizer)
    for _ in range(4):
        reference_optimizer.step()
        reference.step()
    for _ in range(3):  # iterations 4, 5, 6 of the 10-iteration schedule
        expected = [g["lr"] for g in reference_optimizer.param_groups]
        assert [g["lr"] for g in resumed_optimizer.param_groups] == pytest.approx(expected)
        assert expected[0] > 0
        for opt, sched in ((resumed_optimizer, resumed), (reference_optimizer, reference)):
            opt.step()
            sched.step()

