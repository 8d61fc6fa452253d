"""D2DiNAT: DiNAT as a detectron2 backbone, built from cfg.MODEL.DINAT.

The config layer: `from_config` reads MODEL.DINAT into DiNAT's arguments (CONFIG_KEYS says
which key feeds which argument) and checks them there, so a bad value is reported under its
MODEL.DINAT key rather than under the constructor argument DiNAT itself would name.
"""
from typing import Dict, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec

from .dinat import DEFAULT_DEPTHS, DiNAT, DiNATArgumentError, check_dinat_arguments

__all__ = ["CONFIG_KEYS", "D2DiNAT"]

# DiNAT / D2DiNAT argument -> the config key it is read from.
CONFIG_KEYS = {
    "embed_dim": "MODEL.DINAT.EMBED_DIM",
    "depths": "MODEL.DINAT.DEPTHS",
    "num_heads": "MODEL.DINAT.NUM_HEADS",
    "kernel_size": "MODEL.DINAT.KERNEL_SIZE",
    "dilations": "MODEL.DINAT.DILATIONS",
    "mlp_ratio": "MODEL.DINAT.MLP_RATIO",
    "qkv_bias": "MODEL.DINAT.QKV_BIAS",
    "qk_scale": "MODEL.DINAT.QK_SCALE",
    "drop_rate": "MODEL.DINAT.DROP_RATE",
    "attn_drop_rate": "MODEL.DINAT.ATTN_DROP_RATE",
    "drop_path_rate": "MODEL.DINAT.DROP_PATH_RATE",
    "layer_scale": "MODEL.DINAT.LAYER_SCALE",
    "out_features": "MODEL.DINAT.OUT_FEATURES",
    "frozen_stages": "MODEL.DINAT.FROZEN_STAGES",
    "use_checkpoint": "MODEL.DINAT.USE_CHECKPOINT",
    "na_backend": "MODEL.DINAT.NA_BACKEND",
}


def _out_indices(out_features: Sequence[str], num_levels: int):
    """Level indices of res2..res{num_levels+1} names; DiNATArgumentError for unknown or no names."""
    names = [f"res{i + 2}" for i in range(num_levels)]
    unknown = [f for f in out_features if f not in names]
    if not out_features or unknown:
        raise DiNATArgumentError(
            "{out_features} {given}: " + ("unknown names {unknown}; " if unknown else "empty; ") + "choose from {names}.",
            given=list(out_features), unknown=unknown, names=names)
    return [names.index(f) for f in out_features]


@BACKBONE_REGISTRY.register()
class D2DiNAT(DiNAT, Backbone):
    """DiNAT as a detectron2 backbone: image [B, 3, H, W] -> the requested `out_features` among
    res2..res5 (strides 4, 8, 16, 32), channels-first.

    Args:
        out_features: names of the returned features, "res2".."res5".
        **dinat_kwargs: DiNAT's arguments, but for out_indices.
    """

    @configurable
    def __init__(self, *, out_features: Sequence[str], **dinat_kwargs):
        num_levels = len(dinat_kwargs.get("depths", DEFAULT_DEPTHS))
        super().__init__(out_indices=_out_indices(out_features, num_levels), **dinat_kwargs)
        names = [f"res{i + 2}" for i in range(num_levels)]
        self._out_features = [f for f in names if f in out_features]
        self._out_feature_strides = {f"res{i + 2}": 2 ** (i + 2) for i in range(num_levels)}
        self._out_feature_channels = {f"res{i + 2}": c for i, c in enumerate(self.num_features)}

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        c = cfg.MODEL.DINAT
        args = {arg: c[key.split(".")[-1]] for arg, key in CONFIG_KEYS.items()}
        args.update(
            depths=list(c.DEPTHS),
            num_heads=list(c.NUM_HEADS),
            dilations=[list(d) for d in c.DILATIONS],
            out_features=list(c.OUT_FEATURES),
            in_chans=input_shape.channels if input_shape is not None and input_shape.channels else 3,
        )
        try:
            check_dinat_arguments(out_indices=_out_indices(args["out_features"], len(args["depths"])), **args)
        except DiNATArgumentError as e:
            raise ValueError(e.named(CONFIG_KEYS)) from e
        return args

    def forward(self, x) -> Dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"D2DiNAT takes images as [B, {self.in_chans}, H, W] (channels first); got shape {tuple(x.shape)}."
            )
        return super().forward(x)

    @property
    def size_divisibility(self) -> int:
        return 32
