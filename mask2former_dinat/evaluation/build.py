"""Which evaluators score a test dataset: chosen by its metadata `evaluator_type` and the
model's MODEL.MASK_FORMER.TEST.{SEMANTIC,INSTANCE,PANOPTIC}_ON outputs."""
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)
from detectron2.utils import comm

from .cityscapes_evaluation import CityscapesInstanceEvaluator
from .instance_evaluation import InstanceSegEvaluator

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]

EVALUATOR_TYPES = (
    "sem_seg",
    "coco",
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_sem_seg",
    "cityscapes_instance",
    "cityscapes_panoptic_seg",
)


def _check_single_machine(dataset_name):
    # detectron2's Cityscapes evaluators share one temporary folder between ranks.
    if comm.get_world_size() != comm.get_local_size():
        raise ValueError(
            f"Cityscapes evaluation of {dataset_name!r} needs all processes on one machine "
            "(it writes predictions to one local folder); evaluate with --num-machines 1."
        )


def _require(flag, flag_name, dataset_name, evaluator_type):
    if not flag:
        raise ValueError(
            f"Dataset {dataset_name!r} ({evaluator_type}) is evaluated on the model's "
            f"{flag_name.split('_')[0].lower()} output, but MODEL.MASK_FORMER.TEST.{flag_name} is False; "
            "set it to True to evaluate."
        )


def build_evaluator(cfg, dataset_name, output_folder=None):
    """The evaluator(s) for `dataset_name`, combined in a DatasetEvaluators.

    - "sem_seg": SemSegEvaluator (mIoU).
    - "coco": InstanceSegEvaluator (mask AP).
    - "coco_panoptic_seg", "ade20k_panoptic_seg": COCOPanopticEvaluator (PQ) if PANOPTIC_ON,
      InstanceSegEvaluator (mask AP over things) if INSTANCE_ON, SemSegEvaluator if SEMANTIC_ON.
    - "cityscapes_sem_seg": CityscapesSemSegEvaluator; "cityscapes_instance":
      CityscapesInstanceEvaluator; "cityscapes_panoptic_seg": COCOPanopticEvaluator /
      CityscapesInstanceEvaluator / CityscapesSemSegEvaluator by the same three flags.

    Results and predictions are written under `output_folder` (default OUTPUT_DIR/inference).
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    test = cfg.MODEL.MASK_FORMER.TEST
    panoptic, instance, semantic = test.PANOPTIC_ON, test.INSTANCE_ON, test.SEMANTIC_ON

    evaluators = []
    if evaluator_type in ("sem_seg", "cityscapes_sem_seg"):
        _require(semantic, "SEMANTIC_ON", dataset_name, evaluator_type)
    elif evaluator_type in ("coco", "cityscapes_instance"):
        _require(instance, "INSTANCE_ON", dataset_name, evaluator_type)

    if evaluator_type == "sem_seg":
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    elif evaluator_type == "coco":
        evaluators.append(InstanceSegEvaluator(dataset_name, output_dir=output_folder))
    elif evaluator_type in ("coco_panoptic_seg", "ade20k_panoptic_seg"):
        if panoptic:
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if instance:
            evaluators.append(InstanceSegEvaluator(dataset_name, output_dir=output_folder))
        if semantic:
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    elif evaluator_type == "cityscapes_sem_seg":
        _check_single_machine(dataset_name)
        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    elif evaluator_type == "cityscapes_instance":
        _check_single_machine(dataset_name)
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    elif evaluator_type == "cityscapes_panoptic_seg":
        if panoptic:
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        if instance or semantic:
            _check_single_machine(dataset_name)
        if instance:
            evaluators.append(CityscapesInstanceEvaluator(dataset_name))
        if semantic:
            evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    else:
        raise ValueError(
            f"No evaluator for dataset {dataset_name!r} with evaluator_type {evaluator_type!r}; "
            f"its metadata must set evaluator_type to one of {EVALUATOR_TYPES}."
        )
    if not evaluators:
        raise ValueError(
            f"Dataset {dataset_name!r} ({evaluator_type}) is evaluated on the model's panoptic, instance "
            "or semantic output, but MODEL.MASK_FORMER.TEST.PANOPTIC_ON, INSTANCE_ON and SEMANTIC_ON "
            "are all False; turn on the outputs to evaluate."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
