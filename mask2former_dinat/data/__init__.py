"""Datasets (registration) and dataset mappers (training-time loading and augmentation)."""
from . import datasets, dataset_mappers  # noqa: F401
