"""Shared fixtures. Tests run on CPU in float32 with a fixed seed."""
import os

import pytest
import torch
from helpers.reference import REFERENCE_DIR, path

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def reference_dir():
    """tests/reference: what the original code computes (see its README.md)."""
    path("README.md")
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
