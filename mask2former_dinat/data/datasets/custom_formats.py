"""Registration of a user's own datasets in the three standard on-disk formats, with metadata read
from the data (what a datasets file names; see datasets_file.py):

- ``coco_instances``: a COCO instance JSON + image folder (detectron2's ``load_coco_json``);
- ``coco_panoptic``: a COCO panoptic JSON + PNG folder + image folder; the semantic PNGs and the
  instance JSON that panoptic training and instance evaluation read are derived from the panoptic
  annotations into a cache folder the first time they are needed (data/prepare/panoptic_derived.py),
  unless a semantic folder is given;
- ``sem_seg``: an image folder and a folder of label PNGs matched by file stem, with class names.

Every such dataset's metadata holds ``dataset_format``; ``load_custom_dataset(name, exclude)``
loads it leaving out the images in ``exclude`` (what --skip-bad drops).
"""
import functools
import hashlib
import json
import os
from typing import Iterable, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json
from detectron2.utils.colormap import colormap

from ...checkpoint.download import default_cache_dir
from .panoptic_with_sem_seg import load_panoptic_json, panoptic_semseg_metadata
from .registration import register_dataset

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "class_names",
    "derived_dir",
    "exclude_images",
    "load_custom_dataset",
    "read_json",
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "register_sem_seg_dataset",
    "sem_seg_pairs",
]

FORMATS = ("coco_instances", "coco_panoptic", "sem_seg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_json(path: str, what: str) -> dict:
    """A JSON file's object; ValueError naming the file when it is missing or not JSON."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what}: {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: cannot read {path} as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} holds a JSON {type(data).__name__}, not an object with 'images', 'annotations', 'categories'")
    return data


def default_colors(n: int) -> List[List[int]]:
    """n distinct-looking RGB colours (detectron2's colormap, repeated when n is larger)."""
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [palette[i % len(palette)] for i in range(n)]


def _categories(data: dict, json_file: str, need_isthing: bool) -> List[dict]:
    """The JSON's categories sorted by id, each with id, name, isthing and color (given or default)."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise ValueError(f"{json_file}: no 'categories' list; a COCO JSON lists its categories as {{'id', 'name'}} objects")
    keys = ("id", "name", "isthing") if need_isthing else ("id", "name")
    for c in cats:
        if not isinstance(c, dict) or any(k not in c for k in keys):
            raise ValueError(f"{json_file}: category {c!r} lacks one of the keys {', '.join(keys)}")
    cats = sorted(cats, key=lambda c: c["id"])
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{json_file}: category ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    colors = default_colors(len(cats))
    return [
        {"id": c["id"], "name": str(c["name"]), "isthing": int(c.get("isthing", 1)),
         "color": list(c["color"]) if isinstance(c.get("color"), (list, tuple)) and len(c["color"]) == 3 else colors[i]}
        for i, c in enumerate(cats)
    ]


def class_names(name: str) -> List[str]:
    """The model's class names of a dataset registered here, indexed by contiguous id."""
    meta = MetadataCatalog.get(name)
    return list(meta.thing_classes if meta.dataset_format == "coco_instances" else meta.stuff_classes)


def derived_dir(name: str, *inputs: str) -> str:
    """The cache folder of what is derived from a dataset's files: $M2F_DINAT_CACHE/derived/<name>-<key>,
    the key changing when any input path, size or modification time does."""
    h = hashlib.sha1()
    for path in inputs:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return os.path.join(default_cache_dir(), "derived", f"{name}-{h.hexdigest()[:12]}")


def _json_without_images(json_file: str, image_root: str, exclude: Iterable[str], out_dir: str) -> str:
    """A copy of a COCO (instance or panoptic) JSON without the images whose path is in ``exclude``
    and their annotations, and without annotations of images it does not list; returns its path."""
    exclude = {os.path.abspath(p) for p in exclude}
    data = read_json(json_file, "dataset")
    images = [im for im in data.get("images", []) if os.path.abspath(os.path.join(image_root, im["file_name"])) not in exclude]
    kept = {im["id"] for im in images}
    data = dict(data, images=images, annotations=[a for a in data.get("annotations", []) if a.get("image_id") in kept])
    key = hashlib.sha1("\n".join(sorted(exclude)).encode()).hexdigest()[:12]
    path = os.path.join(out_dir, f"without-{key}.json")
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


# -------------------------------------------------------------------------------- coco_instances


def register_coco_instances_dataset(name: str, json_file: str, image_root: str, **extra) -> None:
    """Register ``name``: COCO instance annotations (polygons or RLE) of the images under
    ``image_root``; classes = the JSON's categories in id order (contiguous ids 0..K-1)."""
    cats = _categories(read_json(json_file, "key 'json'"), json_file, need_isthing=False)
    register_dataset(
        name,
        functools.partial(load_custom_dataset, name),
        dataset_format="coco_instances",
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        ignore_label=255,
        thing_classes=[c["name"] for c in cats],
        thing_colors=[c["color"] for c in cats],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats)},
        **extra,
    )


def _load_coco_instances(name, meta, exclude):
    _require_folder(name, meta.image_root, "images")
    json_file = meta.json_file
    if exclude:
        json_file = _json_without_images(json_file, meta.image_root, exclude, derived_dir(name, meta.json_file))
    return load_coco_json(json_file, meta.image_root, name)


# --------------------------------------------------------------------------------- coco_panoptic


def register_coco_panoptic_dataset(name: str, json_file: str, panoptic_root: str, image_root: str,
                                   sem_seg_root: Optional[str] = None, **extra) -> None:
    """Register ``name``: COCO panoptic PNGs + JSON of the images under ``image_root``; classes =
    the JSON's categories in id order, things and stuff (contiguous ids 0..K-1)."""
    cats = _categories(read_json(json_file, "key 'json'"), json_file, need_isthing=True)
    if len(cats) > 254:
        raise ValueError(f"{json_file}: {len(cats)} categories do not fit the 8-bit semantic labels (at most 254 with 255 = void)")
    # the semantic PNGs are derived only when not given: the two cases get their own folders
    derived = derived_dir(name if sem_seg_root is None else f"{name}-instances", json_file)
    register_dataset(
        name,
        functools.partial(load_custom_dataset, name),
        dataset_format="coco_panoptic",
        panoptic_json=json_file,
        panoptic_root=panoptic_root,
        image_root=image_root,
        sem_seg_root=sem_seg_root or os.path.join(derived, "sem_seg"),
        sem_seg_derived=sem_seg_root is None,
        json_file=os.path.join(derived, "instances.json"),
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        categories=cats,
        **panoptic_semseg_metadata(cats),
        **extra,
    )


def _load_coco_panoptic(name, meta, exclude):
    from ..prepare.panoptic_derived import derive_from_panoptic

    for folder, key in ((meta.image_root, "images"), (meta.panoptic_root, "panoptic")):
        _require_folder(name, folder, key)
    derive_from_panoptic(
        meta.panoptic_json, meta.panoptic_root, meta.categories, os.path.dirname(meta.json_file),
        semantic=meta.sem_seg_derived,
    )
    if not meta.sem_seg_derived:
        _require_folder(name, meta.sem_seg_root, "sem_seg")
    json_file = meta.panoptic_json
    if exclude:
        json_file = _json_without_images(json_file, meta.image_root, exclude, os.path.dirname(meta.json_file))
    return load_panoptic_json(json_file, meta.image_root, meta.panoptic_root, meta.sem_seg_root, meta.as_dict(),
                              image_files_from_json=True)


# ---------------------------------------------------------------------------------------- sem_seg


def register_sem_seg_dataset(name: str, image_root: str, sem_seg_root: str, classes: Sequence[str],
                             ignore_label: int = 255, colors: Optional[Sequence[Sequence[int]]] = None, **extra) -> None:
    """Register ``name``: images under ``image_root`` and label PNGs (class id per pixel,
    ``ignore_label`` = not labelled) under ``sem_seg_root`` with the same file stems."""
    colors = [list(c) for c in colors] if colors else default_colors(len(classes))
    register_dataset(
        name,
        functools.partial(load_custom_dataset, name),
        dataset_format="sem_seg",
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        evaluator_type="sem_seg",
        ignore_label=int(ignore_label),
        stuff_classes=list(classes),
        stuff_colors=colors,
        **extra,
    )


def sem_seg_pairs(image_root: str, sem_seg_root: str):
    """(pairs, images without a label, labels without an image): pairs are (image path, label path)
    matched by file stem, sorted; images are the files with an image extension, labels the .png files.
    detectron2's load_sem_seg pairs files by sorted order when the counts agree, which mismatches
    them silently when stems differ; this matches by name."""
    images = {os.path.splitext(f)[0]: os.path.join(image_root, f) for f in sorted(os.listdir(image_root))
              if f.lower().endswith(IMAGE_EXTENSIONS)}
    labels = {os.path.splitext(f)[0]: os.path.join(sem_seg_root, f) for f in sorted(os.listdir(sem_seg_root))
              if f.lower().endswith(".png")}
    pairs = [(images[s], labels[s]) for s in sorted(images) if s in labels]
    return pairs, [images[s] for s in sorted(images) if s not in labels], [labels[s] for s in sorted(labels) if s not in images]


def _load_sem_seg(name, meta, exclude):
    for folder, key in ((meta.image_root, "images"), (meta.sem_seg_root, "labels")):
        _require_folder(name, folder, key)
    pairs, _, _ = sem_seg_pairs(meta.image_root, meta.sem_seg_root)
    exclude = {os.path.abspath(p) for p in exclude}
    records = [{"file_name": img, "sem_seg_file_name": lbl} for img, lbl in pairs if os.path.abspath(img) not in exclude]
    if not records:
        raise ValueError(f"dataset {name!r}: no image under {meta.image_root} has a label PNG of the same name under {meta.sem_seg_root}")
    return records


# ------------------------------------------------------------------------------------------ loading


def _require_folder(name, folder, key):
    if not os.path.isdir(folder):
        source = MetadataCatalog.get(name).get("datasets_file")
        where = f" (key '{key}' in {source})" if source else ""
        raise FileNotFoundError(f"dataset {name!r}: folder {folder}{where} does not exist")


_LOADERS = {"coco_instances": _load_coco_instances, "coco_panoptic": _load_coco_panoptic, "sem_seg": _load_sem_seg}


def load_custom_dataset(name: str, exclude: Iterable[str] = ()) -> List[dict]:
    """The dataset dicts of a dataset registered here, without the images whose paths are in ``exclude``."""
    meta = MetadataCatalog.get(name)
    return _LOADERS[meta.dataset_format](name, meta, frozenset(exclude))


def exclude_images(name: str, images: Iterable[str]) -> None:
    """Re-register ``name`` so that loading it leaves out ``images`` (paths)."""
    images = frozenset(images)
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, functools.partial(load_custom_dataset, name, exclude=images))
