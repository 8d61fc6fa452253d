"""Create the project's virtual environment and install everything into it.

Run by `make setup` (and so by `make test` / `make demo`) with any Python >= 3.9:

    python3 tools/setup_env.py [--venv .venv]

Steps, each skipped when already satisfied, so a second run takes seconds:
1. the virtual environment;
2. torch + torchvision (default torch==2.14.1 torchvision==0.29.1; override with
   TORCH_SPEC="torch==X torchvision==Y", or keep whatever torch the venv has);
3. detectron2, from the first source that applies:
   (a) a detectron2 already importable in the venv is kept;
   (b) upstream detectron2 built from source, when DETECTRON2_SOURCE names a local
       checkout or a git URL, or when upstream's repository can be reached;
   (c) otherwise the offline fallback: PyPI's pb1-detectron2 0.6 without C++ ops
       (tools/detectron2_offline_fallback.py says why), under the numpy/Pillow bounds
       that detectron2 0.6 needs (tools/detectron2_0.6_constraints.txt).
   DETECTRON2_SOURCE=fallback forces (c).
4. this project in editable mode with its test tools, under the same constraints;
   panopticapi (PyPI: panopticapi-lite) with --no-deps (see setup.py);
5. natten (optional accelerator; skipped with SKIP_NATTEN=1).
Which detectron2 source was used is written to <venv>/mask2former_dinat_setup.json,
which `python -m mask2former_dinat.env` reports.
"""
import argparse
import json
import os
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


def ensure_torch(python, pip):
    spec = os.environ.get("TORCH_SPEC")
    if spec is None and imports_cleanly(python, "import torch, torchvision"):
        log("torch: keeping the installed torch/torchvision")
        return
    run(pip + ["install"] + (spec or DEFAULT_TORCH_SPEC).split())


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
            target = source if not os.path.isdir(source) else os.path.abspath(source)
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
            # --no-build-isolation: detectron2's setup.py imports torch to build its ops.
            run(pip + ["install", "--no-build-isolation", target])
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
    if not venv_python(venv).exists():
        run([sys.executable, "-m", "venv", venv])
    python = venv_python(venv)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    record_path = venv / RECORD_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {}

    ensure_torch(python, pip)
    constraints = ensure_detectron2(python, pip, record)
    c_args = ["-c", constraints] if constraints else []
    run(pip + ["install", "-q"] + c_args + ["-e", f"{ROOT}[test]"])
    if not can_import(python, "panopticapi"):
        run(pip + ["install", "-q", "--no-deps", PANOPTICAPI_SPEC])
    if os.environ.get("SKIP_NATTEN") != "1" and not can_import(python, "natten"):
        run(pip + ["install", "-q"] + c_args + [NATTEN_SPEC])

    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log(f"done in {time.time() - start:.0f} s; detectron2: {record['detectron2_source']}")


if __name__ == "__main__":
    main()
