"""Reading a COCO-format panoptic dataset (JSON + PNGs) into detectron2 dataset dicts."""
import json
import os

__all__ = ["load_panoptic_json"]


def load_panoptic_json(json_file, image_dir, panoptic_dir, meta, semseg_dir=None, image_ext=".jpg"):
    """One dict per annotated image of a COCO-format panoptic JSON.

    Each dict has "file_name" (image_dir/<annotation file stem><image_ext>), "image_id" (as in
    the JSON), "pan_seg_file_name", "segments_info" (category ids mapped to contiguous ids with
    meta's thing/stuff maps, plus "isthing") and, with ``semseg_dir``, "sem_seg_file_name"
    (semseg_dir/<annotation file name>).
    """
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    with open(json_file) as f:
        annotations = json.load(f)["annotations"]

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
            "file_name": os.path.join(image_dir, os.path.splitext(ann["file_name"])[0] + image_ext),
            "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(panoptic_dir, ann["file_name"]),
            "segments_info": segments,
        }
        if semseg_dir is not None:
            record["sem_seg_file_name"] = os.path.join(semseg_dir, ann["file_name"])
        records.append(record)
    if not records:
        raise ValueError(f"{json_file} lists no annotated images")
    return records
