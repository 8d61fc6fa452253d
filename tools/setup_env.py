"""Create the project's virtual environment and install everything into it.

Run by `make setup` (and so by `make test` / `make demo`) with any Python >= 3.9:

    python3 tools/setup_env.py [--venv .venv]

Steps, each skipped when already satisfied, so a second run takes seconds:
1. the virtual environment;
2. torch + torchvision (default torch==2.14.1 torchvision==0.29.1; override with
   TORCH_SPEC="torch==X torchvision==Y", or keep whatever torch the venv has). They are
   installed once per machine, Python and spec into a shared folder,
   $M2F_DINAT_CACHE/torch/<python>-<spec> (a CUDA build is about 5.5 GB), which each
   environment adds to its path with a .pth file: a second environment (.venv-upstream, a
   re-created .venv, another clone) costs no more disk. M2F_SHARED_TORCH=0 installs torch
   into the environment itself;
3. detectron2, from the first source that applies:
   (a) a detectron2 already importable in the venv is kept;
   (b) upstream detectron2 built from source, when DETECTRON2_SOURCE names a local
       checkout or a git URL, or when upstream's repository can be reached;
   (c) otherwise the offline fallback: PyPI's pb1-detectron2 0.6 without C++ ops
       (tools/detectron2_offline_fallback.py says why), under the numpy/Pillow bounds
       that detectron2 0.6 needs (tools/detectron2_0.6_constraints.txt).
   DETECTRON2_SOURCE=fallback forces (c).
4. this project in editable mode with its test tools and the export extra (onnx, onnxscript,
   onnxruntime), under the same constraints;
   panopticapi (PyPI: panopticapi-lite) with --no-deps (see setup.py);
5. natten (optional accelerator), only where it can serve a call: a CUDA build of torch with
   a visible GPU. NATTEN=1 installs it anyway, SKIP_NATTEN=1 (or NATTEN=0) never does.
Upstream detectron2 built from a local archive (DETECTRON2_SOURCE=<file>.tar.gz) is kept as a
wheel under $M2F_DINAT_CACHE/wheels (default ~/.cache/mask2former_dinat/wheels), keyed by the
archive's hash, Python and torch, so a second environment installs it in seconds.
Which detectron2 source was used, and why natten is or is not installed, is written to
<venv>/mask2former_dinat_setup.json, which `python -m mask2former_dinat.env` reports.
"""
import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TORCH_SPEC = "torch==2.14.1 torchvision==0.29.1"
UPSTREAM_DETECTRON2 = "https://github.com/facebookresearch/detectron2.git"
FALLBACK_CONSTRAINTS = ROOT / "tools" / "detectron2_0.6_constraints.txt"
NATTEN_SPEC = "natten>=0.21,<0.22"
PANOPTICAPI_SPEC = "panopticapi-lite==0.2.0"
RECORD_NAME = "mask2former_dinat_setup.json"
SHARED_TORCH_PTH = "mask2former_dinat_shared_torch.pth"


def log(msg):
    print(f"[setup] {msg}", flush=True)


def run(cmd, **kwargs):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def venv_python(venv):
    return venv / "bin" / "python"


def can_import(python, module):
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def imports_cleanly(python, statement):
    return subprocess.run([str(python), "-c", statement], capture_output=True).returncode == 0


def upstream_reachable(timeout=15):
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        return subprocess.run(["git", "ls-remote", "--exit-code", UPSTREAM_DETECTRON2, "HEAD"],
                              capture_output=True, timeout=timeout, env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def cache_root():
    """The project's cache, the same folder as mask2former_dinat.checkpoint.download.default_cache_dir()
    (which this script cannot import: the package needs torch and detectron2 installed first)."""
    if os.environ.get("M2F_DINAT_CACHE"):
        return Path(os.environ["M2F_DINAT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mask2former_dinat"


def python_tag(python):
    probe = "import sys; print(f'py{sys.version_info[0]}{sys.version_info[1]}')"
    return subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def site_packages(python):
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                               check=True).stdout.strip())


def shared_torch_dir(python, spec):
    """The shared folder that holds torch for this Python and spec (one per machine)."""
    words = sorted(spec.split())
    readable = "-".join(w.replace("==", "") for w in words)[:80]
    digest = hashlib.sha256(" ".join(words).encode()).hexdigest()[:8]
    return cache_root() / "torch" / f"{python_tag(python)}-{readable}-{digest}"


def install_shared_torch(pip, target, spec):
    """pip-install `spec` into the folder `target` once; concurrent set-ups wait for each other.

    torch comes with its own dependencies (CUDA libraries, sympy, ...); torchvision without its
    numpy and Pillow, which each environment installs under its own bounds (detectron2 0.6 needs
    numpy < 1.24 and Pillow < 10), so that the shared folder never shadows them.
    """
    complete = target / ".complete"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.exists():
            return
        shutil.rmtree(target, ignore_errors=True)  # a partial install from an interrupted run
        vision = [w for w in spec.split() if w.startswith("torchvision")]
        rest = [w for w in spec.split() if not w.startswith("torchvision")]
        log(f"torch: installing {spec} once into {target} (shared by every environment on this machine)")
        run(pip + ["install", "--target", target] + rest)
        if vision:
            run(pip + ["install", "--no-deps", "--target", target] + vision)
        complete.write_text(spec + "\n")


def ensure_torch(python, pip):
    spec = os.environ.get("TORCH_SPEC")
    if spec is None and imports_cleanly(python, "import torch"):
        log("torch: keeping the installed torch/torchvision")
        return None
    spec = spec or DEFAULT_TORCH_SPEC
    if os.environ.get("M2F_SHARED_TORCH") == "0":
        run(pip + ["install"] + spec.split())
        return f"{spec} in the environment (M2F_SHARED_TORCH=0)"
    shared = shared_torch_dir(python, spec)
    install_shared_torch(pip, shared, spec)
    # Appended to sys.path after the environment's own site-packages, so that whatever the
    # environment installs itself (numpy, Pillow, setuptools, ...) takes precedence.
    (site_packages(python) / SHARED_TORCH_PTH).write_text(f"{shared}\n")
    log(f"torch: {spec} from {shared}")
    return f"{spec} shared from {shared}"


def wheel_cache_dir(python, archive):
    """Where the wheel built from `archive` for this Python and torch is kept."""
    digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()[:16]
    probe = "import torch; print(torch.__version__)"
    torch_version = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                                   check=True).stdout.strip()
    return cache_root() / "wheels" / f"detectron2-{digest}-{python_tag(python)}-torch{torch_version}"


def install_from_source(pip, python, target):
    """pip-install detectron2 from a checkout, git URL or archive; an archive's wheel is cached."""
    # --no-build-isolation: detectron2's setup.py imports torch to build its ops.
    if not os.path.isfile(target):
        run(pip + ["install", "--no-build-isolation", target])
        return
    cache = wheel_cache_dir(python, target)
    wheels = sorted(cache.glob("*.whl"))
    if wheels:
        log(f"detectron2: using the wheel built earlier from {target}: {wheels[0]}")
    else:
        log(f"detectron2: building {target} (its C++ ops take several minutes; the wheel is kept in {cache})")
        partial = cache.with_name(cache.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run(pip + ["wheel", "--no-build-isolation", "--no-deps", "-w", partial, target])
        shutil.rmtree(cache, ignore_errors=True)
        partial.rename(cache)  # complete wheels only: an interrupted build leaves no cache entry
        wheels = sorted(cache.glob("*.whl"))
    run(pip + ["install", wheels[0]])


def natten_decision(python):
    """(install natten?, why): only where it can serve a call, or when asked."""
    if os.environ.get("SKIP_NATTEN") == "1" or os.environ.get("NATTEN") == "0":
        return False, "skipped on request (SKIP_NATTEN=1 or NATTEN=0)"
    if os.environ.get("NATTEN") == "1":
        return True, "requested with NATTEN=1"
    if imports_cleanly(python, "import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)"):
        return True, "a CUDA build of torch with a visible GPU: natten's fused kernels can serve bias-free calls"
    return False, ("no CUDA GPU visible, where natten has no kernels of its own and the torch backend "
                   "serves every call; NATTEN=1 make setup installs it anyway")


def ensure_natten(python, pip, c_args, record):
    wanted, why = natten_decision(python)
    if wanted and not can_import(python, "natten"):
        run(pip + ["install", "-q"] + c_args + [NATTEN_SPEC])
    if not wanted:
        log(f"natten: not installed ({why})")
    record["natten"] = ("installed: " if wanted else "not installed: ") + why


def ensure_detectron2(python, pip, record):
    """Returns the constraints file the rest of the install must respect, or None."""
    source = os.environ.get("DETECTRON2_SOURCE", "").strip()
    fallback_stub = "from detectron2 import _C; import sys; sys.exit(0 if getattr(_C, 'MASK2FORMER_DINAT_STUB', False) else 1)"
    if not source and can_import(python, "detectron2"):
        previous = record.get("detectron2_source")
        if imports_cleanly(python, fallback_stub):
            record["detectron2_source"] = previous or "(c) offline fallback: pb1-detectron2 0.6 without C++ ops"
            return FALLBACK_CONSTRAINTS
        record["detectron2_source"] = previous or "(a) already installed in the environment"
        log(f"detectron2: keeping it ({record['detectron2_source']})")
        return None
    if source != "fallback":
        if source:
            target = os.path.abspath(source) if os.path.exists(source) else source
            label = f"(b) upstream from source: {target}"
        elif upstream_reachable():
            target = f"git+{UPSTREAM_DETECTRON2}"
            label = f"(b) upstream from source: {UPSTREAM_DETECTRON2}"
        else:
            target = None
            log("detectron2: upstream repository not reachable; using the offline fallback")
        if target:
            if target.startswith(("http://", "https://", "git@", "ssh://")):
                target = f"git+{target}"
            install_from_source(pip, python, target)
            record["detectron2_source"] = label
            return None
    run([python, ROOT / "tools" / "detectron2_offline_fallback.py"])
    record["detectron2_source"] = "(c) offline fallback: pb1-detectron2 0.6 without C++ ops"
    return FALLBACK_CONSTRAINTS


def main(argv=None):
    parser = argparse.ArgumentParser(description="Create/refresh the project's virtual environment.")
    parser.add_argument("--venv", default=str(ROOT / ".venv"))
    args = parser.parse_args(argv)
    venv = Path(args.venv).resolve()
    start = time.time()
    if not venv_python(venv).exists() or not can_import(venv_python(venv), "pip"):
        # a missing or half-made environment (e.g. an interrupted earlier run): (re)create it
        run([sys.executable, "-m", "venv", venv])
    python = venv_python(venv)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    record_path = venv / RECORD_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {}

    # detectron2 is built from source without build isolation: it needs a setuptools that has
    # bdist_wheel built in (>= 70.1), which a new venv's bundled one may lack.
    if not imports_cleanly(python, "import setuptools.command.bdist_wheel"):
        run(pip + ["install", "-q", "setuptools>=70.1"])
    torch_source = ensure_torch(python, pip)
    record["torch_source"] = torch_source or record.get("torch_source", "installed in the environment")
    constraints = ensure_detectron2(python, pip, record)
    c_args = ["-c", constraints] if constraints else []
    run(pip + ["install", "-q"] + c_args + ["-e", f"{ROOT}[test,export]"])
    if not can_import(python, "panopticapi"):
        run(pip + ["install", "-q", "--no-deps", PANOPTICAPI_SPEC])
    ensure_natten(python, pip, c_args, record)

    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"done in {time.time() - start:.0f} s; detectron2: {record['detectron2_source']}")


if __name__ == "__main__":
    main()
