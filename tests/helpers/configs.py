"""The published configs and the tiny models the tests build from them.

- `published_config(dataset, task)`: the path (relative to the repository) of a shipped DiNAT-L
  config; `PUBLISHED_CONFIGS` lists all eight, `COCO_PANOPTIC` is the one most tests use.
- `load_config(config, *opts)`: get_cfg() with that file (or any config file) merged, then `opts`.
- `published_values(config)` / `published_subset(config, prefixes, keys, opts)`: the values the
  original configs resolve to (tests/reference/published_configs.json), all or some of them on
  top of get_cfg(), for tests that build one component without reading the YAML.
- `published_shapes(config)`: the parameter names and shapes of its published checkpoint.
- `meta_model(config)`: the full model of a published config on the meta device.
- `tiny_model_opts(...)`, `tiny_backbone_opts(...)`, `tiny_head_opts(...)`: config overrides (in
  command-line form, so they serve merge_from_list and subprocesses alike) that shrink the
  DiNAT-L model to one that runs in well under a second on a CPU. The defaults are the common
  tiny model; a test that pins numbers of another one passes its values. `tiny_cfg(config,
  *opts, **tiny)` is a published config loaded with them.
"""
from pathlib import Path
from typing import Iterable, Sequence

from helpers.reference import load_json

REPO = Path(__file__).resolve().parents[2]

_SCHEDULES = {"ade20k": "160k", "coco": "100ep", "cityscapes": "90k"}


def published_config(dataset: str, task: str) -> str:
    """configs/<dataset>/<task>-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_<schedule>.yaml"""
    return (
        f"configs/{dataset}/{task}-segmentation/dinat/"
        f"maskformer2_dinat_large_IN21k_384_bs16_{_SCHEDULES[dataset]}.yaml"
    )


PUBLISHED_CONFIGS = sorted(str(p.relative_to(REPO)) for p in REPO.glob("configs/*/*/dinat/*_large_IN21k_*.yaml"))
COCO_PANOPTIC = published_config("coco", "panoptic")


def load_config(config: str, *opts):
    """get_cfg() with a config file merged (a published one, or any path: relative to the
    repository or absolute), then `opts` (merge_from_list form)."""
    from mask2former_dinat.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / config))
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg


def published_values(config: str = None) -> dict:
    """Every value of the original config (tests/reference/published_configs.json), by full key;
    of every config (by config path) when none is given."""
    values = load_json("published_configs.json")
    return values if config is None else values[config]


def published_shapes(config: str = None) -> dict:
    """Parameter name -> shape of the published checkpoint of `config`
    (tests/reference/published_state_dict_manifest.json); of every config when none is given."""
    manifest = load_json("published_state_dict_manifest.json")
    return manifest if config is None else manifest[config]


def published_subset(config: str, prefixes: Sequence[str] = (), keys: Iterable[str] = (), opts=()):
    """get_cfg() with the published values of the keys that start with one of `prefixes` or are
    in `keys`, then `opts` (a dict or merge_from_list form)."""
    from mask2former_dinat.config import get_cfg

    keys = set(keys)
    pairs = [(k, v) for k, v in published_values(config).items() if k.startswith(tuple(prefixes)) or k in keys]
    cfg = get_cfg()
    cfg.merge_from_list([x for pair in pairs for x in pair])
    opts = [x for kv in opts.items() for x in kv] if hasattr(opts, "items") else list(opts)
    if opts:
        cfg.merge_from_list(opts)
    return cfg


def meta_model(config: str):
    """The full model of a published config, built on the meta device (no memory, no initialisation)."""
    import torch
    from detectron2.modeling import build_model

    from mask2former_dinat.modeling import maskformer_model  # noqa: F401  (registers MaskFormer)

    cfg = load_config(config)
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


def _literal(value) -> str:
    """A value as merge_from_list reads it back (literal_eval): tuples written as lists."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def tiny_backbone_opts(*, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), kernel_size=3,
                       dilations=((1,), (1,), (1,), (1,)), **more):
    """MODEL.DINAT overrides for a tiny DiNAT; `more` adds other MODEL.DINAT keys (DROP_PATH_RATE=0.0)."""
    values = dict(EMBED_DIM=embed_dim, DEPTHS=depths, NUM_HEADS=num_heads, KERNEL_SIZE=kernel_size, DILATIONS=dilations)
    values.update(more)
    return [x for key, value in values.items() for x in (f"MODEL.DINAT.{key}", _literal(value))]


def tiny_head_opts(*, hidden_dim=32, nheads=2, dim_feedforward=64, queries=8, dec_layers=2, train_num_points=None):
    """MODEL.MASK_FORMER overrides for a tiny transformer decoder (and its criterion's point count)."""
    opts = [
        "MODEL.MASK_FORMER.HIDDEN_DIM", str(hidden_dim), "MODEL.MASK_FORMER.NHEADS", str(nheads),
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD", str(dim_feedforward),
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", str(queries), "MODEL.MASK_FORMER.DEC_LAYERS", str(dec_layers),
    ]
    if train_num_points is not None:
        opts += ["MODEL.MASK_FORMER.TRAIN_NUM_POINTS", str(train_num_points)]
    return opts


def tiny_model_opts(*, num_heads=(1, 1, 1, 1), kernel_size=3, dilations=((1,), (1,), (1,), (1,)), queries=8,
                    dec_layers=2, train_num_points=None, conv_dim=32, encoder_layers=1, **backbone):
    """The whole model made tiny: a 16-channel one-block-per-level DiNAT, 32-channel pixel decoder
    with `encoder_layers` deformable-attention layers, a 32-dim decoder of `dec_layers` layers and
    `queries` queries. `backbone` adds MODEL.DINAT keys (DROP_PATH_RATE=0.0)."""
    return [
        *tiny_backbone_opts(num_heads=num_heads, kernel_size=kernel_size, dilations=dilations, **backbone),
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", str(conv_dim), "MODEL.SEM_SEG_HEAD.MASK_DIM", str(conv_dim),
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", str(encoder_layers),
        *tiny_head_opts(queries=queries, dec_layers=dec_layers, train_num_points=train_num_points),
    ]


def tiny_cfg(config: str = COCO_PANOPTIC, *opts, **tiny):
    """A published config (COCO panoptic unless told) with `tiny_model_opts(**tiny)`, then `opts`."""
    return load_config(config, *tiny_model_opts(**tiny), *opts)
