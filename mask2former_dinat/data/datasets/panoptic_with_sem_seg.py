"""COCO-format panoptic datasets with semantic labels: Mask2Former's
``coco_2017_*_panoptic_with_sem_seg``, ``ade20k_panoptic_*`` and the synthetic dataset share
this metadata, loader and registration."""
import functools
import json
import os

from .registration import checked_loader, register_dataset, require_paths

__all__ = ["load_panoptic_json", "panoptic_semseg_metadata", "register_panoptic_with_sem_seg"]


def panoptic_semseg_metadata(categories):
    """Class names, colors and id maps of a COCO-format panoptic dataset with semantic labels,
    for `categories` (COCO category dicts with id, name, isthing, color): things listed alone in
    thing_classes; stuff_classes and the stuff map cover every category (things too), so the
    semantic evaluator sees contiguous ids 0..len(categories)-1 = the index in `categories`."""
    things = [c for c in categories if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [c["color"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def load_panoptic_json(json_file, image_dir, panoptic_dir, semseg_dir, meta, image_files_from_json=False):
    """One dict per annotated image of a COCO-format panoptic JSON.

    Each dict has "file_name" (image_dir/<annotation file stem>.jpg, or with
    ``image_files_from_json`` image_dir/<the JSON image's file_name>, with its "height" and
    "width"), "image_id" (as in the JSON), "pan_seg_file_name", "sem_seg_file_name"
    (semseg_dir/<annotation file name>) and "segments_info" (category ids mapped to contiguous
    ids with meta's thing/stuff maps, plus "isthing").
    """
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    with open(json_file) as f:
        data = json.load(f)
    annotations = data["annotations"]
    images = {im["id"]: im for im in data.get("images", [])} if image_files_from_json else {}

    records = []
    for ann in annotations:
        segments = []
        for seg in ann["segments_info"]:
            seg = dict(seg)
            cat = seg["category_id"]
            if cat in thing_map:
                seg["category_id"], seg["isthing"] = thing_map[cat], True
            elif cat in stuff_map:
                seg["category_id"], seg["isthing"] = stuff_map[cat], False
            else:
                raise ValueError(f"{json_file}: segment {seg['id']} of {ann['file_name']} has unknown category {cat}")
            segments.append(seg)
        record = {
            "file_name": os.path.join(image_dir, os.path.splitext(ann["file_name"])[0] + ".jpg"),
            "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(panoptic_dir, ann["file_name"]),
            "sem_seg_file_name": os.path.join(semseg_dir, ann["file_name"]),
            "segments_info": segments,
        }
        if image_files_from_json:
            image = images[ann["image_id"]]
            record["file_name"] = os.path.join(image_dir, image["file_name"])
            record.update({k: image[k] for k in ("height", "width") if k in image})
        records.append(record)
    if not records:
        raise ValueError(f"{json_file} lists no annotated images")
    return records


def _load_checked(what, root, top, files, meta, hints):
    records = load_panoptic_json(
        files["panoptic_json"], files["image_root"], files["panoptic_root"], files["sem_seg_root"], meta
    )
    first = records[0]
    require_paths(
        what, root, top,
        [(first["file_name"], hints["image"]), (first["pan_seg_file_name"], hints["panoptic"]),
         (first["sem_seg_file_name"], hints["sem_seg"])],
    )
    return records


def register_panoptic_with_sem_seg(name, what, root, top, files, meta, hints=None, **metadata):
    """Register ``name`` over ``files``: "image_root" (.jpg images), "panoptic_root" and
    "panoptic_json" (COCO panoptic PNGs and JSON), "sem_seg_root" (semantic PNGs named like the
    panoptic ones), all under ``root``/``top``; ``meta`` as panoptic_semseg_metadata makes it.
    Loading checks the files exist and otherwise raises FileNotFoundError naming ``what`` and
    the missing path, with ``hints`` ("image", "panoptic", "sem_seg": how to make that file, if
    generated). ``files``, ``meta`` and ``metadata`` go into the metadata catalog."""
    hints = {"image": "", "panoptic": "", "sem_seg": "", **(hints or {})}
    required = [
        (files["image_root"], hints["image"]),
        (files["panoptic_root"], hints["panoptic"]),
        (files["panoptic_json"], hints["panoptic"]),
        (files["sem_seg_root"], hints["sem_seg"]),
    ]
    load = functools.partial(_load_checked, what, root, top, files, meta, hints)
    register_dataset(
        name,
        checked_loader(what, root, top, required, load),
        **files,
        **metadata,
        **meta,
    )
