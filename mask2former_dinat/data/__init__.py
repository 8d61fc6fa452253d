"""Datasets (registration), dataset mappers (training-time loading and augmentation) and, in
``prepare`` (imported on demand), the one-off conversions of downloaded datasets."""
from . import datasets, dataset_mappers  # noqa: F401
