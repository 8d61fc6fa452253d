"""Evaluation: what detectron2 lacks (instance AP over the thing classes of panoptic
models) and the choice of evaluators per test dataset."""
from .build import EVALUATOR_TYPES, build_evaluator
from .instance_evaluation import InstanceSegEvaluator

__all__ = ["EVALUATOR_TYPES", "InstanceSegEvaluator", "build_evaluator"]
