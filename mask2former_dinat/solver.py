"""Optimizer and learning-rate schedule for training (used by the Trainer, mask2former_dinat.engine).

`build_optimizer` groups parameters the way Mask2Former + DiNAT were trained:
the backbone's learning rate is scaled by SOLVER.BACKBONE_MULTIPLIER, normalization
layers get SOLVER.WEIGHT_DECAY_NORM and positional tables / embeddings get
SOLVER.WEIGHT_DECAY_EMBED. Gradient clipping of type "full_model" clips the norm of
all gradients together; "value" and "norm" are detectron2's per-parameter clipping.
"""
import itertools
import logging
from typing import Any, Dict, List, Type

import torch
from detectron2.config import CfgNode
from detectron2.layers import FrozenBatchNorm2d
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR as _DeepLabWarmupPolyLR
from detectron2.solver import build_lr_scheduler as _build_detectron2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups

__all__ = [
    "EMBEDDING_PARAM_NAMES",
    "NORM_MODULE_TYPES",
    "WarmupPolyLR",
    "apply_scheduled_lr",
    "build_lr_scheduler",
    "build_optimizer",
    "get_optimizer_param_groups",
    "maybe_add_full_model_gradient_clipping",
]

NORM_MODULE_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,  # detectron2's NaiveSyncBatchNorm is a BatchNorm2d
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
    FrozenBatchNorm2d,
)

# Parameter names (the last component) that hold positional tables: Swin's relative
# bias table and absolute embedding, DiNAT's relative positional bias.
EMBEDDING_PARAM_NAMES = frozenset({"relative_position_bias_table", "absolute_pos_embed", "rpb"})

_OPTIMIZERS = ("ADAMW", "SGD")
_FULL_MODEL = "full_model"


def get_optimizer_param_groups(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """Parameter groups with per-group "lr" and "weight_decay", merged where equal.

    Precedence, last wins: defaults (BASE_LR, WEIGHT_DECAY); lr * BACKBONE_MULTIPLIER for
    parameters of modules under a "backbone" module; WEIGHT_DECAY_NORM for parameters of
    normalization layers; WEIGHT_DECAY_EMBED for positional tables and nn.Embedding
    weights; detectron2's bias settings (BIAS_LR_FACTOR, WEIGHT_DECAY_BIAS) when set.
    Frozen parameters (requires_grad False) are left out; shared ones appear once.
    """
    solver = cfg.SOLVER
    base_lr = solver.BASE_LR
    params: List[Dict[str, Any]] = []
    seen = set()
    for module_name, module in model.named_modules():
        in_backbone = "backbone" in module_name.split(".")
        for param_name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            seen.add(value)
            lr, weight_decay = base_lr, solver.WEIGHT_DECAY
            if in_backbone:
                lr = lr * solver.BACKBONE_MULTIPLIER
            if isinstance(module, NORM_MODULE_TYPES):
                weight_decay = solver.WEIGHT_DECAY_NORM
            if param_name in EMBEDDING_PARAM_NAMES or isinstance(module, torch.nn.Embedding):
                weight_decay = solver.WEIGHT_DECAY_EMBED
            if param_name == "bias":
                lr = lr * solver.BIAS_LR_FACTOR
                if solver.WEIGHT_DECAY_BIAS is not None:
                    weight_decay = solver.WEIGHT_DECAY_BIAS
            params.append({"params": [value], "lr": lr, "weight_decay": weight_decay})
    if not params:
        raise ValueError("The model has no trainable parameters (all have requires_grad=False).")
    return reduce_param_groups(params)


def maybe_add_full_model_gradient_clipping(
    cfg: CfgNode, optimizer_type: Type[torch.optim.Optimizer]
) -> Type[torch.optim.Optimizer]:
    """`optimizer_type`, or a subclass whose step() first clips the gradient norm over
    all parameters together (SOLVER.CLIP_GRADIENTS with CLIP_TYPE "full_model")."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == _FULL_MODEL):
        return optimizer_type
    if clip.CLIP_VALUE <= 0:
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0 for full-model clipping, got "
            f"{clip.CLIP_VALUE}; set a positive max norm or SOLVER.CLIP_GRADIENTS.ENABLED False."
        )
    max_norm, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)

    def step(self, closure=None):
        all_params = itertools.chain(*[group["params"] for group in self.param_groups])
        torch.nn.utils.clip_grad_norm_(all_params, max_norm, norm_type)
        return optimizer_type.step(self, closure)

    return type(optimizer_type.__name__ + "WithFullModelGradientClip", (optimizer_type,), {"step": step})


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER ("ADAMW" or "SGD") over `get_optimizer_param_groups`, with the
    gradient clipping SOLVER.CLIP_GRADIENTS asks for."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in _OPTIMIZERS:
        raise ValueError(f"Unknown SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r}; use one of {_OPTIMIZERS}.")
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE not in (_FULL_MODEL, "value", "norm"):
        raise ValueError(
            f"Unknown SOLVER.CLIP_GRADIENTS.CLIP_TYPE {clip.CLIP_TYPE!r}; "
            f"use 'full_model', 'norm' or 'value'."
        )
    groups = get_optimizer_param_groups(cfg, model)
    if name == "SGD":
        optimizer_type, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    else:
        optimizer_type, kwargs = torch.optim.AdamW, {}
    if clip.ENABLED and clip.CLIP_TYPE == _FULL_MODEL:
        optimizer_type = maybe_add_full_model_gradient_clipping(cfg, optimizer_type)
    else:
        optimizer_type = maybe_add_gradient_clipping(cfg, optimizer_type)
    optimizer = optimizer_type(groups, lr=cfg.SOLVER.BASE_LR, **kwargs)
    logging.getLogger(__name__).info(
        "Optimizer %s with %d parameter groups", optimizer_type.__name__, len(optimizer.param_groups)
    )
    return optimizer


class WarmupPolyLR(_DeepLabWarmupPolyLR):
    """DeepLab's poly schedule, lr = base_lr * warmup(it) * (1 - it / max_iters) ** power.

    Its checkpointed state is its progress only, so a resumed run follows the schedule of its
    own config (e.g. a larger SOLVER.MAX_ITER) instead of the one saved with the checkpoint.
    Every detectron2 needs this, not only release 0.6: upstream's DeepLab WarmupPolyLR is unchanged.
    """

    _SETTINGS = ("max_iters", "warmup_factor", "warmup_iters", "warmup_method", "power", "constant_ending")

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k not in self._SETTINGS}

    def load_state_dict(self, state_dict):
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in self._SETTINGS})


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler._LRScheduler:
    """SOLVER.LR_SCHEDULER_NAME: "WarmupPolyLR" (DeepLab's poly schedule), or detectron2's
    "WarmupMultiStepLR" / "WarmupCosineLR". Stepped once per iteration."""
    if cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR":
        if cfg.SOLVER.MAX_ITER <= 0:
            raise ValueError(f"WarmupPolyLR needs SOLVER.MAX_ITER > 0, got {cfg.SOLVER.MAX_ITER}.")
        return WarmupPolyLR(
            optimizer,
            cfg.SOLVER.MAX_ITER,
            warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
            warmup_iters=cfg.SOLVER.WARMUP_ITERS,
            warmup_method=cfg.SOLVER.WARMUP_METHOD,
            power=cfg.SOLVER.POLY_LR_POWER,
            constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
        )
    return _build_detectron2_lr_scheduler(cfg, optimizer)


def apply_scheduled_lr(scheduler: torch.optim.lr_scheduler._LRScheduler) -> None:
    """Set each optimizer group's lr to the schedule's value at `scheduler.last_epoch`. After a
    resume the optimizer holds the lr saved with the checkpoint, which a schedule changed in
    the config (e.g. a larger MAX_ITER) no longer gives."""
    lrs = scheduler.get_lr()  # closed-form in the schedules build_lr_scheduler makes
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
