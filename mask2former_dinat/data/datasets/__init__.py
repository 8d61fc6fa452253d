"""Dataset registration: every dataset the published configs name, with full metadata.

Importing this package registers them under $DETECTRON2_DATASETS (default ``./datasets``);
``register_all_datasets(root)`` registers them again under another root (replacing the earlier
registration). ``register_datasets_file(path)`` registers a user's datasets from a YAML file
(datasets_file.py). Files are read only when ``DatasetCatalog.get(name)`` is called; a missing folder
then raises FileNotFoundError naming the expected path (see datasets/README.md).
"""
from .registration import datasets_root
from .datasets_file import DatasetsFileError, datasets_from_file, register_datasets_file
from .register_ade20k_instance import register_all_ade20k_instance
from .register_ade20k_panoptic import register_all_ade20k_panoptic
from .register_ade20k_semantic import register_all_ade20k_semantic
from .register_cityscapes import register_all_cityscapes
from .register_coco_instance import register_all_coco_instance
from .register_coco_panoptic_annos_semseg import register_all_coco_panoptic
from .register_synthetic import register_all_synthetic

__all__ = ["register_all_datasets", "datasets_root", "register_datasets_file", "datasets_from_file", "DatasetsFileError"]


def register_all_datasets(root=None):
    """(Re-)register every dataset of this project under ``root`` (default: $DETECTRON2_DATASETS,
    else "datasets")."""
    root = datasets_root(root)
    register_all_coco_instance(root)
    register_all_coco_panoptic(root)
    register_all_ade20k_semantic(root)
    register_all_ade20k_panoptic(root)
    register_all_ade20k_instance(root)
    register_all_cityscapes(root)
    register_all_synthetic(root)


register_all_datasets()
