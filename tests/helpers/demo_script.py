"""demo/demo.py loaded as a module (it imports its sibling `predictor`, as detectron2's demo does)."""
import importlib.util
import sys

from helpers.configs import REPO

DEMO_DIR = REPO / "demo"


def load_demo_script(module_name="m2f_dinat_demo_script"):
    if str(DEMO_DIR) not in sys.path:
        sys.path.insert(0, str(DEMO_DIR))
    spec = importlib.util.spec_from_file_location(module_name, DEMO_DIR / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
