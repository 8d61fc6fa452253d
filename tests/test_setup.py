"""The environment `make setup` builds: real detectron2 with what Mask2Former needs."""
import json
import subprocess
import sys
from pathlib import Path

import torch


def test_detectron2_imports_the_pieces_mask2former_needs():
    from detectron2.checkpoint import DetectionCheckpointer  # noqa: F401
    from detectron2.data import transforms as T
    from detectron2.engine import DefaultTrainer, launch  # noqa: F401
    from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator  # noqa: F401
    from detectron2.projects.deeplab import add_deeplab_config  # noqa: F401
    from detectron2.structures import BitMasks, ImageList, Instances  # noqa: F401

    # Pillow/numpy bounds: transforms import and run (Image.LINEAR default argument in 0.6).
    aug = T.ResizeShortestEdge([32], 64, sample_style="choice")
    out = T.AugInput(torch.zeros(48, 64, 3, dtype=torch.uint8).numpy())
    aug(out)
    assert out.image.shape[:2] == (32, 43)


def test_detectron2_builds_and_runs_a_model_on_cpu():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 50
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.randint(0, 255, (3, 64, 80), dtype=torch.uint8)}])
    assert out[0]["instances"].image_size == (64, 80)


def test_package_registers_its_components_with_detectron2():
    import mask2former_dinat  # noqa: F401
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

    assert "D2DiNAT" in BACKBONE_REGISTRY
    assert "MaskFormer" in META_ARCH_REGISTRY
    assert "MaskFormerHead" in SEM_SEG_HEADS_REGISTRY


def test_env_report_names_detectron2_source_and_na_backend():
    out = subprocess.run([sys.executable, "-m", "mask2former_dinat.env"], capture_output=True, text=True,
                         check=True).stdout
    rows = {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip()
            for line in out.splitlines() if "  " in line and not line.startswith(" ")}
    assert rows["detectron2 source"].startswith(("(a)", "(b)", "(c)"))
    assert "auto on cpu: torch" in out  # the dispatcher's own account of which kernel runs and why
    assert rows["detectron2 C++ ops"].startswith(("absent", "compiled"))
    assert rows["natten serves DiNAT's biased attention"] in ("yes",) or rows[
        "natten serves DiNAT's biased attention"].startswith("no")


def test_env_report_piped_into_a_reader_that_stops_early_ends_quietly():
    # `python -m mask2former_dinat.env | head -1`: the reader closes the pipe after one line.
    proc = subprocess.Popen([sys.executable, "-m", "mask2former_dinat.env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.strip()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_setup_record_matches_the_installed_detectron2():
    from mask2former_dinat.env import SETUP_RECORD, detectron2_info

    source, ops = detectron2_info()
    if SETUP_RECORD.exists():
        assert json.loads(SETUP_RECORD.read_text())["detectron2_source"] == source
    if source.startswith("(c)"):
        assert ops.startswith("absent")


def test_offline_detectron2_explains_its_missing_compiled_ops():
    from detectron2 import _C

    if not getattr(_C, "MASK2FORMER_DINAT_STUB", False):
        assert hasattr(_C, "get_compiler_version")  # a real build: nothing to explain
        return
    try:
        _C.deform_conv_forward
    except AttributeError as e:
        assert "without C++ ops" in str(e) and "DETECTRON2_SOURCE" in str(e)
    else:
        raise AssertionError("the stand-in must not pretend to have compiled ops")


def _setup_env():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "setup_env.py"
    spec = importlib.util.spec_from_file_location("setup_env", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_setup_installs_natten_only_where_it_can_serve_or_when_asked(monkeypatch):
    setup_env = _setup_env()
    for var in ("NATTEN", "SKIP_NATTEN"):
        monkeypatch.delenv(var, raising=False)
    wanted, why = setup_env.natten_decision(sys.executable)
    gpu = bool(torch.version.cuda) and torch.cuda.is_available()
    assert wanted == gpu, why
    if not gpu:
        assert "no CUDA GPU visible" in why and "NATTEN=1" in why
    monkeypatch.setenv("NATTEN", "1")
    assert setup_env.natten_decision(sys.executable) == (True, "requested with NATTEN=1")
    monkeypatch.setenv("SKIP_NATTEN", "1")
    assert setup_env.natten_decision(sys.executable)[0] is False


def test_env_report_says_why_natten_is_absent():
    from mask2former_dinat.env import natten_info

    version, bias = natten_info()
    try:
        import natten  # noqa: F401
    except ImportError:
        assert version.startswith("not installed")  # with the reason the set-up recorded
        assert bias.startswith("no: natten is not installed")
    else:
        assert not version.startswith("not installed") and bias.startswith(("yes", "no: natten >= 0.20"))


def test_archive_builds_of_detectron2_are_cached_per_archive_python_and_torch(tmp_path, monkeypatch):
    setup_env = _setup_env()
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path / "cache"))
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    a.write_bytes(b"one archive")
    b.write_bytes(b"another archive")
    first = setup_env.wheel_cache_dir(sys.executable, a)
    assert first == setup_env.wheel_cache_dir(sys.executable, a)
    assert first != setup_env.wheel_cache_dir(sys.executable, b)
    assert first.parent == tmp_path / "cache" / "wheels"
    assert f"torch{torch.__version__}" in first.name and f"py{sys.version_info[0]}{sys.version_info[1]}" in first.name


def test_shared_torch_folder_is_one_per_python_and_spec(tmp_path, monkeypatch):
    setup_env = _setup_env()
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path))
    default = setup_env.shared_torch_dir(sys.executable, "torch==2.14.1 torchvision==0.29.1")
    assert default == setup_env.shared_torch_dir(sys.executable, "torchvision==0.29.1  torch==2.14.1")
    assert default != setup_env.shared_torch_dir(sys.executable, "torch==2.9.1 torchvision==0.24.1")
    assert default.parent == tmp_path / "torch"
    assert default.name.startswith(f"py{sys.version_info[0]}{sys.version_info[1]}-torch2.14.1-torchvision0.29.1-")


def test_interrupted_shared_torch_install_is_redone_not_reused(tmp_path):
    """A shared torch folder counts only once its install finished; torchvision comes without deps."""
    setup_env = _setup_env()
    calls = tmp_path / "calls.txt"
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text(
        "import pathlib, sys\n"
        "args = sys.argv[1:]\n"
        f"calls = pathlib.Path({str(calls)!r})\n"
        "calls.write_text((calls.read_text() if calls.exists() else '') + ' '.join(args) + '\\n')\n"
        "target = pathlib.Path(args[args.index('--target') + 1]); target.mkdir(parents=True, exist_ok=True)\n"
        "(target / args[-1].split('==')[0]).write_text('')\n"
        "sys.exit(1 if calls.read_text().count('\\n') == 1 else 0)\n")
    pip = [sys.executable, str(fake_pip)]
    target = tmp_path / "torch" / "py-x"
    try:
        setup_env.install_shared_torch(pip, target, "torch==1 torchvision==2")
    except subprocess.CalledProcessError:
        pass
    else:
        raise AssertionError("the first (failing) install must raise")
    assert not (target / ".complete").exists()
    setup_env.install_shared_torch(pip, target, "torch==1 torchvision==2")
    assert (target / ".complete").exists() and (target / "torch").exists() and (target / "torchvision").exists()
    lines = calls.read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith("torch==1") and "--no-deps" not in lines[1]
    assert "--no-deps" in lines[2] and lines[2].endswith("torchvision==2")
    setup_env.install_shared_torch(pip, target, "torch==1 torchvision==2")  # complete: nothing to do
    assert len(calls.read_text().splitlines()) == 3


def test_setup_cache_is_the_download_cache(tmp_path, monkeypatch):
    from mask2former_dinat.checkpoint.download import default_cache_dir

    setup_env = _setup_env()
    monkeypatch.delenv("M2F_DINAT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert setup_env.cache_root() == Path(default_cache_dir()) == tmp_path / "xdg" / "mask2former_dinat"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert setup_env.cache_root() == Path(default_cache_dir())
    monkeypatch.setenv("M2F_DINAT_CACHE", str(tmp_path / "own"))
    assert setup_env.cache_root() == Path(default_cache_dir()) == tmp_path / "own"
