"""Shared fixtures. Tests run on CPU in float32 with a fixed seed."""
import os
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(os.environ.get("M2F_DINAT_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def reference_dir():
    """../shared/reference: what the original code computes (see its README.md)."""
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference data not found at {REFERENCE_DIR}; set M2F_DINAT_REFERENCE to the folder")
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
