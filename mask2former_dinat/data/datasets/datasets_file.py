"""The datasets file: a YAML mapping that registers a user's datasets, no Python needed
(``train_net.py --datasets FILE.yaml``, ``demo/demo.py --datasets FILE.yaml``).

    bricks_train: {format: coco_instances, json: bricks/train.json, images: bricks/train}
    rooms_val:    {format: coco_panoptic, json: rooms/panoptic_val.json, panoptic: rooms/panoptic_val, images: rooms/val}
    roads_train:  {format: sem_seg, images: roads/img, labels: roads/lbl, classes: [road, car], ignore_label: 255}

Each entry's keys are in FORMAT_KEYS; paths are relative to the file's folder. Errors name the
file, the dataset and the key.
"""
import os
from typing import Dict, List

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog

from .custom_formats import (
    FORMATS,
    register_coco_instances_dataset,
    register_coco_panoptic_dataset,
    register_sem_seg_dataset,
)

__all__ = ["FORMAT_KEYS", "DatasetsFileError", "read_datasets_file", "register_datasets_file", "datasets_from_file"]

# format -> {key: (required, what it is)}
FORMAT_KEYS: Dict[str, Dict[str, tuple]] = {
    "coco_instances": {
        "json": (True, "the COCO instance JSON (images, annotations with polygons or RLE, categories)"),
        "images": (True, "the folder of the images its 'file_name's are relative to"),
    },
    "coco_panoptic": {
        "json": (True, "the COCO panoptic JSON (images, annotations with segments_info, categories with isthing)"),
        "panoptic": (True, "the folder of its panoptic PNGs"),
        "images": (True, "the folder of the images"),
        "sem_seg": (False, "a folder of semantic PNGs (contiguous ids, 255 void); derived and cached when left out"),
    },
    "sem_seg": {
        "images": (True, "the image folder"),
        "labels": (True, "the folder of label PNGs, one per image with the same file stem, one class id per pixel"),
        "classes": (True, "the class names, in id order: a list, or a text file with one name per line"),
        "ignore_label": (False, "the label value of unlabelled pixels (default 255)"),
        "colors": (False, "one [R, G, B] per class for drawing (default: a fixed palette)"),
    },
}


class DatasetsFileError(ValueError):
    """A datasets file that cannot be used; the message names the file, dataset and key."""


def _fail(path, msg):
    raise DatasetsFileError(f"datasets file {path}: {msg}")


def _path(path, name, key, value):
    if not isinstance(value, str) or not value:
        _fail(path, f"dataset {name!r}, key '{key}': expected a path, got {value!r}")
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(value)))


def _classes(path, name, value):
    if isinstance(value, str):
        file = _path(path, name, "classes", value)
        try:
            with open(file) as f:
                value = [line.strip() for line in f if line.strip()]
        except OSError as e:
            _fail(path, f"dataset {name!r}, key 'classes': cannot read the class names file {file} ({e.strerror or e})")
    if not isinstance(value, list) or not value or not all(isinstance(c, (str, int, float)) for c in value):
        _fail(path, f"dataset {name!r}, key 'classes': expected a non-empty list of names or a text file, got {value!r}")
    names = [str(c) for c in value]
    if len(set(names)) != len(names):
        _fail(path, f"dataset {name!r}, key 'classes': names repeat: {sorted({c for c in names if names.count(c) > 1})}")
    return names


def read_datasets_file(path: str) -> Dict[str, dict]:
    """name -> {"format", and the format's keys with paths made absolute, classes as a list}."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise DatasetsFileError(f"cannot read datasets file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise DatasetsFileError(f"datasets file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not data:
        _fail(path, "expected a mapping of dataset names to {format: ..., ...} entries, e.g.\n"
                    "  bricks_train: {format: coco_instances, json: train.json, images: train}")
    specs = {}
    for name, entry in data.items():
        if not isinstance(name, str) or not name:
            _fail(path, f"dataset name {name!r} is not a string")
        if not isinstance(entry, dict):
            _fail(path, f"dataset {name!r}: expected a mapping with 'format' and its keys, got {entry!r}")
        fmt = entry.get("format")
        if fmt not in FORMATS:
            _fail(path, f"dataset {name!r}: 'format' is {fmt!r}; one of {', '.join(FORMATS)}")
        keys = FORMAT_KEYS[fmt]
        unknown = sorted(set(entry) - set(keys) - {"format"})
        if unknown:
            _fail(path, f"dataset {name!r} ({fmt}): unknown key(s) {', '.join(map(repr, unknown))}; "
                        f"the keys of {fmt} are {', '.join(keys)}")
        missing = [k for k, (required, _) in keys.items() if required and k not in entry]
        if missing:
            _fail(path, f"dataset {name!r} ({fmt}): missing key(s) {', '.join(map(repr, missing))} ("
                        + "; ".join(f"{k}: {keys[k][1]}" for k in missing) + ")")
        spec = {"format": fmt}
        for key, value in entry.items():
            if key == "format":
                continue
            if key == "classes":
                spec[key] = _classes(path, name, value)
            elif key == "ignore_label":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
                    _fail(path, f"dataset {name!r}, key 'ignore_label': expected an integer 0..65535, got {value!r}")
                spec[key] = value
            elif key == "colors":
                spec[key] = value
            else:
                spec[key] = _path(path, name, key, value)
        if "colors" in spec:
            colors = spec["colors"]
            ok = isinstance(colors, list) and len(colors) == len(spec["classes"]) and all(
                isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors
            )
            if not ok:
                _fail(path, f"dataset {name!r}, key 'colors': expected {len(spec['classes'])} [R, G, B] lists of 0..255, one per class")
        specs[name] = spec
    return specs


def register_datasets_file(path: str) -> List[str]:
    """Register every dataset of the file (replacing an earlier registration from a datasets file);
    returns their names. A name that is one of this project's built-in datasets is refused."""
    specs = read_datasets_file(path)
    source = os.path.abspath(path)
    for name, spec in specs.items():
        if name in DatasetCatalog.list() and MetadataCatalog.get(name).get("dataset_format") is None:
            _fail(path, f"dataset {name!r} is already a dataset of detectron2 or this project; give yours another name")
        try:
            if spec["format"] == "coco_instances":
                register_coco_instances_dataset(name, spec["json"], spec["images"], datasets_file=source)
            elif spec["format"] == "coco_panoptic":
                register_coco_panoptic_dataset(
                    name, spec["json"], spec["panoptic"], spec["images"], spec.get("sem_seg"), datasets_file=source
                )
            else:
                register_sem_seg_dataset(
                    name, spec["images"], spec["labels"], spec["classes"], spec.get("ignore_label", 255),
                    spec.get("colors"), datasets_file=source,
                )
        except ValueError as e:
            _fail(path, f"dataset {name!r} ({spec['format']}): {e}")
    return list(specs)


def datasets_from_file(names) -> List[str]:
    """Those of ``names`` that a datasets file registered."""
    return [n for n in names if n in MetadataCatalog.list() and MetadataCatalog.get(n).get("dataset_format") is not None]
