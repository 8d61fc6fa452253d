"""Fitting a config to the datasets of a datasets file: the class count, the training mapper and the
outputs evaluation needs follow the data when the config's values do not fit it."""
from typing import List

from detectron2.data import MetadataCatalog

from .datasets.custom_formats import class_names
from .datasets.datasets_file import datasets_from_file

__all__ = ["MAPPERS", "fit_config_for_drawing", "fit_config_to_datasets"]

# format -> the training mappers that read it; the first is the default, the LSJ one replaces a config's LSJ mapper
MAPPERS = {
    "coco_instances": ("mask_former_instance", "coco_instance_lsj"),
    "coco_panoptic": ("mask_former_panoptic", "coco_panoptic_lsj"),
    "sem_seg": ("mask_former_semantic",),
}


def _set(cfg, key, value, why, changes):
    node, leaf = cfg, key.split(".")
    for part in leaf[:-1]:
        node = node[part]
    old = node[leaf[-1]]
    if old != value:
        node[leaf[-1]] = value
        changes.append(f"{key}: {old!r} in the config does not fit {why}; set to {value!r}")


def fit_config_to_datasets(cfg) -> List[str]:
    """Adjust the (unfrozen) cfg to the datasets-file datasets in DATASETS.TRAIN and DATASETS.TEST;
    returns one line per change, for the log. Raises ValueError when those datasets disagree on
    their classes or (training) on their format."""
    train = datasets_from_file(cfg.DATASETS.TRAIN)
    test = datasets_from_file(cfg.DATASETS.TEST)
    names = list(dict.fromkeys(train + test))
    if not names:
        return []
    for key, given, mine in (("TRAIN", cfg.DATASETS.TRAIN, train), ("TEST", cfg.DATASETS.TEST, test)):
        others = [n for n in given if n not in mine]
        if others and (mine or train):  # (the demo leaves a config's built-in DATASETS.TRAIN alone)
            raise ValueError(
                f"DATASETS.{key} names {', '.join(map(repr, others))} beside datasets of the datasets file: the model "
                f"would learn or be scored on other classes. Name only datasets of your file in DATASETS.{key} "
                f"(or set it to '()')"
            )
    classes = {n: class_names(n) for n in names}
    first = names[0]
    for n in names[1:]:
        if classes[n] != classes[first]:
            raise ValueError(
                f"datasets {first!r} and {n!r} have different classes ({classes[first]} and {classes[n]}); "
                "a model is trained and evaluated on one set of classes, in one order"
            )
    changes = []
    _set(cfg, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(classes[first]), f"the {len(classes[first])} classes of {first!r}", changes)

    formats = {n: MetadataCatalog.get(n).dataset_format for n in names}
    train_formats = sorted({formats[n] for n in train})
    if len(train_formats) > 1:
        raise ValueError(
            f"DATASETS.TRAIN mixes formats ({', '.join(f'{n}: {formats[n]}' for n in train)}); "
            "one training mapper reads one format: train on datasets of one format"
        )
    if train_formats:
        fmt = train_formats[0]
        mapper = cfg.INPUT.DATASET_MAPPER_NAME
        if mapper not in MAPPERS[fmt]:
            lsj = [m for m in MAPPERS[fmt] if m.endswith("_lsj")]
            choice = lsj[0] if mapper.endswith("_lsj") and lsj else MAPPERS[fmt][0]
            _set(cfg, "INPUT.DATASET_MAPPER_NAME", choice, f"the {fmt} dataset {train[0]!r}", changes)
        if fmt == "sem_seg":
            ignore = MetadataCatalog.get(train[0]).ignore_label
            _set(cfg, "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", ignore, f"the ignore label of {train[0]!r}", changes)

    test_flags = cfg.MODEL.MASK_FORMER.TEST
    for n in test:
        if formats[n] == "sem_seg":  # no thing classes: only the semantic output can be evaluated
            why = f"the sem_seg dataset {n!r} (DATASETS.TEST), which has no thing classes"
            _set(cfg, "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True, why, changes)
            _set(cfg, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", False, why, changes)
            _set(cfg, "MODEL.MASK_FORMER.TEST.INSTANCE_ON", False, why, changes)
        elif formats[n] == "coco_instances":
            _set(cfg, "MODEL.MASK_FORMER.TEST.INSTANCE_ON", True, f"the coco_instances dataset {n!r} (DATASETS.TEST)", changes)
        elif not (test_flags.PANOPTIC_ON or test_flags.INSTANCE_ON or test_flags.SEMANTIC_ON):
            _set(cfg, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True, f"the coco_panoptic dataset {n!r} (DATASETS.TEST)", changes)
    return changes


def fit_config_for_drawing(cfg, names) -> List[str]:
    """The demo's config for a datasets file registering ``names``: DATASETS.TEST names the dataset
    whose class names are drawn (the file's first when it names none of them, provided they all
    share their classes), then fit_config_to_datasets. Returns the log lines."""
    changes = []
    if not datasets_from_file(cfg.DATASETS.TEST):
        if len({tuple(class_names(n)) for n in names}) > 1:
            raise ValueError(
                f"the datasets of the datasets file have different classes: name the one the model was trained on "
                f"with DATASETS.TEST (one of {', '.join(names)})"
            )
        _set(cfg, "DATASETS.TEST", (names[0],), "the datasets file (its class names are drawn)", changes)
    return changes + fit_config_to_datasets(cfg)
