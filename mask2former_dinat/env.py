"""`python -m mask2former_dinat.env`: what a bug report needs.

What only this project knows -- where detectron2 came from and whether its C++ ops exist,
natten (version, whether it can serve DiNAT's biased attention), which neighborhood- and
deformable-attention backends run, the versions of the data/eval libraries -- followed by
detectron2's own environment report (``detectron2.utils.collect_env``: Python, numpy,
detectron2, PyTorch and its build, GPUs and CUDA, Pillow, torchvision, OpenCV).
"""
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

SETUP_RECORD = Path(sys.prefix) / "mask2former_dinat_setup.json"


def _version(dist, module=None):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    if module:
        try:
            return getattr(importlib.import_module(module), "__version__", "installed (version unknown)")
        except Exception:  # noqa: BLE001 - a report must not crash on a broken package
            pass
    return "not installed"


def _setup_record():
    return json.loads(SETUP_RECORD.read_text()) if SETUP_RECORD.exists() else {}


def detectron2_info():
    """(source (a)/(b)/(c), C++ ops status)."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        return f"none: detectron2 is not importable ({e})", "n/a"
    from mask2former_dinat.engine.detectron2_release import compiled_ops

    state, detail = compiled_ops()
    stub = state == "stand-in"
    ops = {"missing": f"missing ({detail})", "compiled": f"compiled ({detail})",
           "stand-in": "absent (pure-Python stand-in; Mask2Former does not need them)"}[state]
    source = _setup_record().get("detectron2_source")
    if source is None:
        source = ("(c) offline fallback: pb1-detectron2 0.6 without C++ ops" if stub
                  else "(a) installed outside `make setup`")
    return source, ops


def natten_info():
    try:
        import natten
    except ImportError:
        why = _setup_record().get("natten", "not installed (optional)")
        return why, "no: natten is not installed (optional; the torch backend serves every call)"
    version = getattr(natten, "__version__", _version("natten"))
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    has_bias = major_minor < (0, 20)
    compiled = getattr(natten, "HAS_LIBNATTEN", None)
    bias = ("yes" if has_bias else
            "no: natten >= 0.20 has no relative positional bias; it serves only bias-free calls")
    return f"{version} (compiled kernels: {compiled})", bias


def na_backend_info():
    try:
        from mask2former_dinat.layers import neighborhood_attention
        return neighborhood_attention.describe_backends()
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {type(e).__name__}: {e}"


def msda_backend_info():
    try:
        from mask2former_dinat.layers import ms_deform_attn
        return ms_deform_attn.describe_backend()
    except Exception as e:  # noqa: BLE001
        return f"unavailable: {type(e).__name__}: {e}"


def collect():
    """This project's part of the report as (key, value) rows."""
    d2_source, d2_ops = detectron2_info()
    natten_version, natten_bias = natten_info()
    return [
        ("mask2former_dinat", _version("mask2former-dinat")),
        ("platform", platform.platform()),
        ("detectron2 source", d2_source),
        ("detectron2 C++ ops", d2_ops),
        ("natten", natten_version),
        ("natten serves DiNAT's biased attention", natten_bias),
        ("neighborhood attention backend", na_backend_info()),
        ("deformable attention backend", msda_backend_info()),
        ("pycocotools", _version("pycocotools")),
        ("panopticapi", _version("panopticapi-lite", "panopticapi")),
        ("cityscapesscripts", _version("cityscapesscripts")),
        ("scipy", _version("scipy")),
    ]


def format_report(rows):
    width = max(len(k) for k, _ in rows)
    lines = []
    for key, value in rows:
        value_lines = str(value).splitlines() or [""]
        lines.append(f"{key.ljust(width)}  {value_lines[0]}")
        lines.extend(" " * (width + 2) + v for v in value_lines[1:])
    return "\n".join(lines)


def main():
    try:
        print(format_report(collect()), flush=True)
        try:
            from detectron2.utils.collect_env import collect_env_info
        except ImportError:
            return  # the rows above say why
        print()
        print(collect_env_info(), flush=True)
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and keep Python's exit-time flush of
        # stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
