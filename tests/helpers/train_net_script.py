"""train_net.py run in this process (what `python train_net.py ...` does with one process), and the
overrides that make a published config train in seconds on the tests' 48x64 datasets."""
import importlib.util

from detectron2.engine import default_argument_parser
from helpers.configs import REPO, tiny_model_opts

__all__ = ["TINY_TRAINING", "train_net", "run_train_net"]

TINY_TRAINING = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    *tiny_model_opts(num_heads=(1, 1, 2, 2), train_num_points=256, DROP_PATH_RATE=0.0),
    "INPUT.IMAGE_SIZE", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.CROP.SIZE", "(48, 48)", "INPUT.COLOR_AUG_SSD", "False",
    "INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1000",
    "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
]


def _load():
    spec = importlib.util.spec_from_file_location("m2f_dinat_train_net", REPO / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load()


def run_train_net(*argv):
    """(exit status train_net.py stops with before training, or None; what main() returned)."""
    args = train_net._add_arguments(default_argument_parser()).parse_args([str(a) for a in argv])
    status = train_net.check_data(args)
    if status is not None:
        return status, None
    return None, train_net.main(args)
