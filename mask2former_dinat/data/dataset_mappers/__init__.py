"""Training dataset mappers, one per INPUT.DATASET_MAPPER_NAME (see build.py)."""
from .build import DATASET_MAPPER_REGISTRY, build_train_loader, build_train_mapper, register_dataset_mapper
from .coco_instance_new_baseline_dataset_mapper import COCOInstanceNewBaselineDatasetMapper
from .coco_panoptic_new_baseline_dataset_mapper import COCOPanopticNewBaselineDatasetMapper
from .mask_former_instance_dataset_mapper import MaskFormerInstanceDatasetMapper
from .mask_former_panoptic_dataset_mapper import MaskFormerPanopticDatasetMapper
from .mask_former_semantic_dataset_mapper import MaskFormerSemanticDatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "build_train_loader",
    "build_train_mapper",
    "register_dataset_mapper",
    "COCOInstanceNewBaselineDatasetMapper",
    "COCOPanopticNewBaselineDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerSemanticDatasetMapper",
]
