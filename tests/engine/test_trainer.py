"""The Trainer's checks before it builds anything (its training runs end to end in tests/test_train_net.py)."""
import pytest

from mask2former_dinat.config import get_cfg
from mask2former_dinat.engine import Trainer


def test_amp_without_cuda_is_refused_before_building():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.AMP.ENABLED = True
    with pytest.raises(ValueError, match="SOLVER.AMP.ENABLED"):
        Trainer(cfg)
