"""The check of the two COCO formats (coco_instances, coco_panoptic): the JSON's images,
categories and annotations against each other and against the files they name."""
import os
from collections import Counter

from ..datasets.custom_formats import read_json
from .files import inspect_files
from .report import DatasetReport

__all__ = ["check_coco_instances", "check_coco_panoptic", "OUTSIDE_TOLERANCE"]

OUTSIDE_TOLERANCE = 1.0  # pixels a box or polygon may reach past the image border (rounding in tools that write them)


def _load(report, json_file, parts):
    try:
        data = read_json(json_file, f"dataset {report.name!r}")
    except ValueError as e:
        report.add("bad file", json_file, "", str(e))
        return None
    for part in parts:
        if not isinstance(data.get(part), list):
            report.add("bad file", json_file, "", f"no '{part}' list")
            return None
    return data


def _images(report, data, json_file, image_root):
    """{image id: {"path", "file_name", "width", "height"}} of the JSON's images (size from the JSON,
    else the file); adds the problems of the image files."""
    images, listed = {}, []
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            report.add("bad file", json_file, "", f"image entry {im!r} lacks 'id' or 'file_name'")
            continue
        if im["id"] in images:
            report.add("duplicate image", json_file, f"image {im['id']}", f"listed again as {im['file_name']}",
                       image=os.path.join(image_root, im["file_name"]))
            continue
        path = os.path.join(image_root, im["file_name"])
        images[im["id"]] = {"path": path, "file_name": im["file_name"], "width": im.get("width"), "height": im.get("height")}
        listed.append(im["id"])
    for image_id, found in zip(listed, inspect_files((images[i]["path"], "image") for i in listed)):
        im = images[image_id]
        if "error" in found:
            report.add(found["error"], im["path"], f"(image {image_id})", found["detail"], image=im["path"])
            continue
        w, h = found["size"]
        if im["width"] is None or im["height"] is None:
            im["width"], im["height"] = w, h
        elif (im["width"], im["height"]) != (w, h):
            report.add("image size", json_file, f"image {image_id} ({im['file_name']})",
                       f"the JSON says {im['width']}x{im['height']}, the file is {w}x{h}", image=im["path"])
    return images


def _check_box(report, json_file, entry, bbox, im):
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4) or im["width"] is None:
        return
    x, y, w, h = bbox
    t = OUTSIDE_TOLERANCE
    if x < -t or y < -t or x + w > im["width"] + t or y + h > im["height"] + t:
        report.add("outside image", json_file, entry,
                   f"bbox {list(bbox)} reaches outside the {im['width']}x{im['height']} image", image=im["path"])


def _check_segmentation(report, json_file, entry, seg, im):
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                n = len(poly) / 2 if isinstance(poly, list) else 0
                report.add("short polygon", json_file, entry,
                           f"polygon {k} has {n:g} points; a polygon needs at least 3 (6 coordinates)", image=im["path"])
            elif im["width"] is not None:
                xs, ys, t = poly[0::2], poly[1::2], OUTSIDE_TOLERANCE
                if min(xs) < -t or min(ys) < -t or max(xs) > im["width"] + t or max(ys) > im["height"] + t:
                    report.add("outside image", json_file, entry,
                               f"polygon {k} spans x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g}, "
                               f"outside the {im['width']}x{im['height']} image", image=im["path"])
    elif isinstance(seg, dict):
        size = seg.get("size")
        if im["width"] is not None and list(size or ()) != [im["height"], im["width"]]:
            report.add("outside image", json_file, entry,
                       f"the RLE mask has size {size} (height, width), the image is {im['height']}x{im['width']}", image=im["path"])
    else:
        report.add("bad file", json_file, entry, f"'segmentation' is {type(seg).__name__}: expected polygons or an RLE", image=im["path"])


def _empty_categories(report, json_file, cats, used, what):
    for cid, name in cats.items():
        if not used[cid]:
            report.add("empty category", json_file, f"category {cid} {name!r}", f"no {what} uses it")


def check_coco_instances(report: DatasetReport, meta) -> DatasetReport:
    json_file, image_root = meta.json_file, meta.image_root
    data = _load(report, json_file, ("images", "annotations", "categories"))
    if data is None:
        return report
    images = _images(report, data, json_file, image_root)
    cats = {c["id"]: c["name"] for c in data["categories"]}
    used = Counter()
    for a in data["annotations"]:
        entry = f"annotation {a.get('id')}"
        im = images.get(a.get("image_id"))
        if im is None:
            report.add("unknown image", json_file, entry, f"image_id {a.get('image_id')!r} is not in 'images'")
            continue
        entry += f" (image {im['file_name']})"
        if a.get("category_id") not in cats:
            report.add("unknown category", json_file, entry,
                       f"category_id {a.get('category_id')!r} is not among the categories {sorted(cats)}", image=im["path"])
        else:
            used[a["category_id"]] += 1
        _check_segmentation(report, json_file, entry, a.get("segmentation"), im)
        _check_box(report, json_file, entry, a.get("bbox"), im)
    _empty_categories(report, json_file, cats, used, "annotation")
    report.counts = {"images": len(data["images"]), "annotations": len(data["annotations"]), "categories": len(cats)}
    return report


def check_coco_panoptic(report: DatasetReport, meta) -> DatasetReport:
    json_file, image_root, panoptic_root = meta.panoptic_json, meta.image_root, meta.panoptic_root
    data = _load(report, json_file, ("images", "annotations", "categories"))
    if data is None:
        return report
    images = _images(report, data, json_file, image_root)
    cats = {c["id"]: c["name"] for c in data["categories"]}
    num_classes, ignore = len(cats), meta.ignore_label
    anns = []
    for a in data["annotations"]:
        im = images.get(a.get("image_id"))
        entry = f"annotation of image {a.get('image_id')!r}"
        if im is None:
            report.add("unknown image", json_file, entry, "its image_id is not in 'images'")
        elif "file_name" not in a or not isinstance(a.get("segments_info"), list):
            report.add("bad file", json_file, entry, "lacks 'file_name' or 'segments_info'", image=im["path"])
        else:
            anns.append((a, im))
    jobs = [(os.path.join(panoptic_root, a["file_name"]), "panoptic") for a, _ in anns]
    semantic = not meta.sem_seg_derived
    if semantic:
        jobs += [(os.path.join(meta.sem_seg_root, a["file_name"]), "label") for a, _ in anns]
    found = inspect_files(jobs)
    used = Counter()
    for k, (a, im) in enumerate(anns):
        png, pan = jobs[k][0], found[k]
        entry = f"(image {im['file_name']})"
        checks = [(png, pan)] + ([(jobs[len(anns) + k][0], found[len(anns) + k])] if semantic else [])
        for path, f in checks:
            if "error" in f:
                report.add(f["error"], path, entry, f["detail"], image=im["path"])
            elif im["width"] is not None and tuple(f["size"]) != (im["width"], im["height"]):
                report.add("label size", path, entry,
                           f"the PNG is {f['size'][0]}x{f['size'][1]}, its image {im['width']}x{im['height']}", image=im["path"])
        if semantic and "values" in found[len(anns) + k]:
            values = found[len(anns) + k]["values"]
            bad = values[(values >= num_classes) & (values != ignore)]
            if bad.size:
                report.add("class id above NUM_CLASSES", checks[1][0], entry,
                           f"values {bad.tolist()} are neither class ids 0..{num_classes - 1} nor the ignore label {ignore}",
                           image=im["path"])
        listed = set()
        for seg in a["segments_info"]:
            seg_entry = f"segment {seg.get('id')} {entry}"
            listed.add(seg.get("id"))
            if seg.get("category_id") not in cats:
                report.add("unknown category", json_file, seg_entry,
                           f"category_id {seg.get('category_id')!r} is not among the categories {sorted(cats)}", image=im["path"])
            else:
                used[seg["category_id"]] += 1
            if "values" in pan and seg.get("id") not in set(pan["values"].tolist()):
                report.add("segment without pixels", png, seg_entry, "no pixel of the PNG has this segment id", image=im["path"])
            _check_box(report, json_file, seg_entry, seg.get("bbox"), im)
        if "values" in pan:
            unlisted = sorted(set(pan["values"].tolist()) - listed - {0})
            if unlisted:
                report.add("unlisted segment", png, entry,
                           f"segment ids {unlisted[:10]}{' ...' if len(unlisted) > 10 else ''} are in the PNG "
                           "but not in the annotation's segments_info", image=im["path"])
    _empty_categories(report, json_file, cats, used, "segment")
    report.counts = {"images": len(data["images"]), "segments": sum(len(a["segments_info"]) for a, _ in anns),
                     "categories": len(cats)}
    return report
