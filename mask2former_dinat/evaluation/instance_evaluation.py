"""COCO-style instance segmentation AP over the thing classes of a dataset.

detectron2's COCOEvaluator assumes the model's class ids are exactly 0..N-1 for the N
thing classes. Panoptic models (COCO panoptic, ADE20K panoptic) predict over all classes,
things and stuff, so their thing ids are a subset of a larger contiguous range
(ADE20K's 100 things are spread over 0..149). This evaluator maps each predicted class
back to its dataset id with `thing_dataset_id_to_contiguous_id` and drops predictions of
stuff classes, which have no instance ground truth.
"""
import copy
import itertools
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.utils.file_io import PathManager
from pycocotools.cocoeval import COCOeval

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(COCOEvaluator):
    """Mask AP ("segm") of `Instances` predictions whose `pred_classes` are contiguous ids of
    the dataset's metadata (things or stuff); the ground truth is the COCO-format json of the
    dataset's metadata `json_file` (or the dataset dicts converted to one).

    Always uses pycocotools' official COCOeval (this detectron2 may lack the compiled one).
    """

    def __init__(self, dataset_name, tasks=("segm",), distributed=True, output_dir=None, *, max_dets_per_image=None):
        super().__init__(
            dataset_name,
            tasks=tasks,
            distributed=distributed,
            output_dir=output_dir,
            max_dets_per_image=max_dets_per_image,
            use_fast_impl=False,
        )
        meta = self._metadata
        if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            raise ValueError(
                f"Dataset {dataset_name!r} has no metadata 'thing_dataset_id_to_contiguous_id'; "
                "InstanceSegEvaluator needs it to map predicted classes to dataset category ids."
            )
        self._contiguous_id_to_dataset_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
        gt_category_ids = set(self._coco_api.getCatIds())
        unknown = sorted(set(self._contiguous_id_to_dataset_id.values()) - gt_category_ids)
        if unknown:
            raise ValueError(
                f"Thing category ids {unknown} of dataset {dataset_name!r} are not categories of its "
                f"ground-truth json {meta.json_file}; the metadata and the json disagree."
            )

    def _eval_predictions(self, predictions, img_ids=None):
        coco_results = []
        for result in itertools.chain(*[x["instances"] for x in predictions]):
            dataset_id = self._contiguous_id_to_dataset_id.get(result["category_id"])
            if dataset_id is None:  # a stuff class: no instance ground truth
                continue
            result = copy.copy(result)
            result["category_id"] = dataset_id
            coco_results.append(result)
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info("Saving results to %s", file_path)
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        # COCOeval orders its per-category results by sorted category id; name them from the json.
        cats = self._coco_api.cats
        class_names = [cats[i]["name"] for i in sorted(cats)]
        for task in sorted(tasks):
            coco_eval = (
                evaluate_on_coco(self._coco_api, coco_results, task, img_ids, self._max_dets_per_image)
                if coco_results  # pycocotools fails on an empty result list
                else None
            )
            self._results[task] = self._derive_coco_results(coco_eval, task, class_names=class_names)


def evaluate_on_coco(coco_gt, coco_results, iou_type, img_ids=None, max_dets=(1, 10, 100)):
    """pycocotools' official COCOeval of `coco_results` (COCO result dicts) against `coco_gt`,
    evaluated, accumulated and summarised. Mask AP uses the masks' own areas for the size ranges
    (a result's box would replace them), and AP is computed at up to max_dets[2] detections per image.
    """
    if iou_type == "segm":
        coco_results = [{k: v for k, v in r.items() if k != "bbox"} for r in coco_results]
    coco_dt = coco_gt.loadRes(coco_results)
    max_dets = list(max_dets or (1, 10, 100))
    # COCOeval's summary reports AP at 100 detections only; COCOevalMaxDets at max_dets[2].
    coco_eval = (COCOeval if max_dets[2] == 100 else COCOevalMaxDets)(coco_gt, coco_dt, iou_type)
    coco_eval.params.maxDets = max_dets
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval

