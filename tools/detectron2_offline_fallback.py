"""Install detectron2 0.6 from PyPI's `pb1-detectron2` sdist, without C++ ops.

Why this exists: detectron2 is not on PyPI. The only detectron2 that the
package index serves is `pb1-detectron2==0.6`, a source release whose Python
files are upstream v0.6 but whose C++ sources (`detectron2/layers/csrc`) are
missing, so a plain `pip install pb1-detectron2` fails in its build. Mask2Former
needs none of detectron2's compiled ops (rotated boxes, deformable conv,
ROIAlignRotated, the fast COCOeval), so on a machine that cannot reach
detectron2's repository we:

1. download the sdist and build a wheel with the extension list emptied (by
   wrapping `setuptools.setup`; detectron2's own files are not edited);
2. add a pure-Python `detectron2/_C.py` to that wheel, because four detectron2
   modules do `from detectron2 import _C` at import time; any op looked up on
   it raises an AttributeError that says what is missing and how to get it;
3. install the wheel under numpy < 1.24 and Pillow < 10, which detectron2 0.6
   needs (`np.bool` in its evaluators and masks, `Image.LINEAR` as a default
   argument in its transforms). The pins are in `detectron2_0.6_constraints.txt`
   beside this script; the project is installed under the same constraints.

Run with the target environment's Python: `python tools/detectron2_offline_fallback.py`.
"""
import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "pb1-detectron2==0.6"
CONSTRAINTS = Path(__file__).with_name("detectron2_0.6_constraints.txt")

STUB_C = '''"""Stand-in for detectron2's compiled ops, written by mask2former-dinat's offline installer.

This detectron2 0.6 was built without its C++ extension. Mask2Former does not
use any of its ops; install upstream detectron2 from source to get them.
"""
MASK2FORMER_DINAT_STUB = True  # read by mask2former_dinat.engine.detectron2_release.compiled_ops


def get_compiler_version():
    return "none (detectron2 installed without C++ ops by mask2former-dinat)"


def get_cuda_version():
    return "none"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"detectron2._C.{name} is not available: this detectron2 0.6 was installed by "
        "mask2former-dinat's offline fallback without C++ ops. Install upstream detectron2 "
        "from source (set DETECTRON2_SOURCE to a checkout or git URL and re-run `make setup`) "
        "to use deformable conv, rotated boxes, ROIAlignRotated or the fast COCOeval."
    )
'''

# Runs detectron2's setup.py with no extension modules: its setup.py has no switch for that.
BUILD_WITHOUT_EXTENSIONS = """
import sys, setuptools
_setup = setuptools.setup
def setup(**kwargs):
    kwargs["ext_modules"] = []
    kwargs.pop("cmdclass", None)
    return _setup(**kwargs)
setuptools.setup = setup
sys.argv = ["setup.py", "bdist_wheel", "--dist-dir", sys.argv[1]]
__file__ = "setup.py"
exec(compile(open("setup.py").read(), "setup.py", "exec"))
"""


def run(cmd, **kwargs):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", help="a local pb1-detectron2-0.6.tar.gz instead of downloading it")
    args = parser.parse_args(argv)
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="d2-fallback-") as tmp:
        tmp = Path(tmp)
        sdist = Path(args.sdist) if args.sdist else None
        if sdist is None:
            # --no-build-isolation: its metadata step imports torch, which the isolated env lacks.
            run(pip + ["download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                       "-d", tmp / "sdist", PACKAGE])
            sdist = next((tmp / "sdist").glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        src = next((tmp / "src").iterdir())
        (src / "detectron2" / "_C.py").write_text(STUB_C)
        run([sys.executable, "-c", BUILD_WITHOUT_EXTENSIONS, tmp / "wheel"], cwd=src,
            stdout=subprocess.DEVNULL)
        wheel = next((tmp / "wheel").glob("*.whl"))
        run(pip + ["install", "-c", CONSTRAINTS, wheel])


if __name__ == "__main__":
    main()
