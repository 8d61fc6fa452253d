"""Model outputs built from known labels, to score with the evaluators.

The label inputs are the ``records`` of helpers.dataset_writers (contiguous ids); each function
returns what MaskFormer's inference returns for one image (detectron2's output dict entries).
"""
import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, Instances

from mask2former_dinat.modeling.inference import masks_to_boxes

__all__ = ["sem_seg_output", "panoptic_output", "instances_output", "evaluate_outputs"]


def sem_seg_output(labels, num_classes):
    """"sem_seg": one-hot class scores [C, H, W] for a label map (255 = void, predicted as 0)."""
    labels = torch.as_tensor(np.where(labels == 255, 0, labels).astype(np.int64))
    return {"sem_seg": torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float()}


def panoptic_output(segments, shape):
    """"panoptic_seg": (segment ids int32 [H, W], segments_info) with one predicted segment per
    non-crowd segment ({"category_id" contiguous, "isthing", "mask"}); the rest is void (0)."""
    ids = torch.zeros(shape, dtype=torch.int32)
    info = []
    for seg in segments:
        if seg.get("iscrowd", 0):
            continue
        ids[torch.as_tensor(seg["mask"])] = len(info) + 1
        info.append({"id": len(info) + 1, "category_id": int(seg["category_id"]), "isthing": bool(seg["isthing"])})
    return {"panoptic_seg": (ids, info)}


def instances_output(instances, shape, scores=None):
    """"instances": one prediction per non-crowd instance ({"category_id", "mask"}), with the
    given scores (default 0.9, 0.8, ...) and boxes around the masks."""
    kept = [x for x in instances if not x.get("iscrowd", 0)]
    masks = torch.stack([torch.as_tensor(x["mask"]) for x in kept]) if kept else torch.zeros((0, *shape), dtype=torch.bool)
    result = Instances(tuple(shape))
    result.pred_masks = masks
    result.pred_boxes = Boxes(masks_to_boxes(masks))
    result.pred_classes = torch.tensor([int(x["category_id"]) for x in kept], dtype=torch.int64)
    default = [0.9 - 0.05 * i for i in range(len(kept))]
    result.scores = torch.tensor(default if scores is None else scores, dtype=torch.float32)
    return {"instances": result}


def evaluate_outputs(evaluator, dataset_name, output_for):
    """Run `evaluator` over the dataset's dicts; `output_for(dataset_dict)` gives each output dict."""
    evaluator.reset()
    for record in DatasetCatalog.get(dataset_name):
        evaluator.process([record], [output_for(record)])
    return evaluator.evaluate()
