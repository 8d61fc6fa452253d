"""INPUT.DATASET_MAPPER_NAME -> training dataset mapper."""
from detectron2.data import build_detection_train_loader
from detectron2.utils.registry import Registry

__all__ = ["DATASET_MAPPER_REGISTRY", "register_dataset_mapper", "build_train_mapper", "build_train_loader"]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers by INPUT.DATASET_MAPPER_NAME. Each is a @configurable class
called as ``Mapper(cfg, is_train=True)``; an instance maps a dataset dict to the model's input
dict ("image" uint8 [3, H, W], "instances" with gt_classes / gt_masks, ...).
"""


def register_dataset_mapper(name):
    """Class decorator: register a mapper under the config name ``name``."""

    def deco(cls):
        DATASET_MAPPER_REGISTRY._do_register(name, cls)
        return cls

    return deco


def build_train_mapper(cfg):
    """The mapper named by cfg.INPUT.DATASET_MAPPER_NAME, built for training."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_REGISTRY:
        valid = ", ".join(sorted(n for n, _ in DATASET_MAPPER_REGISTRY))
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME is {name!r}, which is not a dataset mapper; valid names: {valid}")
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, True)


def build_train_loader(cfg):
    """detectron2's training loader over cfg.DATASETS.TRAIN with the configured mapper."""
    return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))
