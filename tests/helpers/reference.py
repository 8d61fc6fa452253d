"""The original code's outputs that the tests compare against (tests/reference/, see its README.md).

Every file is part of the repository: a missing one is an error at collection, never an
empty parametrisation.
"""
import json
import os
from pathlib import Path

import torch

REFERENCE_DIR = Path(os.environ.get("M2F_DINAT_REFERENCE", Path(__file__).resolve().parents[1] / "reference"))


def path(name):
    """The path of reference file `name`; raises if it is missing."""
    p = REFERENCE_DIR / name
    if not p.is_file():
        raise FileNotFoundError(
            f"reference file {p} is missing: it ships with the repository under tests/reference/ "
            "(restore it with git, or point M2F_DINAT_REFERENCE at a folder that has it)")
    return p


def load_json(name):
    return json.loads(path(name).read_text())


def load_torch(name):
    return torch.load(path(name), weights_only=True)
