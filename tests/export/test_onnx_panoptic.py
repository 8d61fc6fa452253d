"""tools/export_model.py --format onnx on the tiny model of the published COCO panoptic config,
with its weights through MODEL.WEIGHTS; onnxruntime against PyTorch; NumPy post-processing
against MaskFormer's; the runner needs neither PyTorch nor the package."""
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from helpers.configs import REPO, published_config, tiny_model_opts
from helpers.exported_models import SIZE, THRESHOLDS, assert_same_results, build, export_cfg, random_rgb, torch_raw, torch_results

from mask2former_dinat.export import metadata
from mask2former_dinat.export.onnx_runtime import OnnxMaskFormer

# measured: at most 1.5e-6 (pred_masks) and 9e-7 (pred_logits) over the three tiny models
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, wrapper, cfg, path to the .onnx, the tool's stdout)."""
    folder = tmp_path_factory.mktemp("onnx_panoptic")
    cfg = export_cfg("coco", "panoptic")
    model, wrapper = build(cfg)
    weights = folder / "tiny.pth"
    torch.save({"model": model.state_dict()}, weights)
    path = folder / "model.onnx"
    cmd = [sys.executable, str(REPO / "tools/export_model.py"), "--config-file", published_config("coco", "panoptic"),
           "--format", "onnx", "--output", str(path), "--size", str(SIZE[0]), str(SIZE[1]),
           "--opts", *tiny_model_opts(), "MODEL.WEIGHTS", str(weights), *THRESHOLDS]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return model, wrapper, cfg, path, done.stdout


def test_tool_prints_file_size_opset_and_parity(exported):
    _, _, _, path, stdout = exported
    size_mib = path.stat().st_size / 2**20
    assert re.search(rf"wrote {re.escape(str(path))}: {size_mib:.1f} MiB, ONNX opset 18", stdout), stdout
    diffs = re.search(r"max abs difference pred_logits (\S+), pred_masks (\S+)", stdout)
    assert diffs and max(float(diffs.group(1)), float(diffs.group(2))) < TOLERANCE, stdout


def test_graph_has_the_documented_input_and_outputs(exported):
    graph = onnx.load(str(exported[3])).graph
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in graph.input] == ["image"] and dims(graph.input[0]) == [1, 3, *SIZE]
    outputs = {o.name: dims(o) for o in graph.output}
    assert outputs == {"pred_logits": [1, 8, 134], "pred_masks": [1, 8, 16, 24]}


def test_onnxruntime_outputs_match_pytorch(exported):
    model, wrapper, _, path, _ = exported
    runner = OnnxMaskFormer(str(path))
    rgb = random_rgb(*SIZE, seed=1)
    logits, masks, padded = runner.raw(rgb)
    want_logits, want_masks = torch_raw(wrapper, rgb)
    assert padded == (64, 96)
    assert np.abs(logits - want_logits).max() < TOLERANCE
    assert np.abs(masks - want_masks).max() < TOLERANCE


def test_numpy_postprocessing_gives_maskformers_panoptic_instances_and_semantic(exported):
    model, _, cfg, path, _ = exported
    rgb = random_rgb(*SIZE, seed=2)
    got = OnnxMaskFormer(str(path)).predict(rgb)
    assert set(got) == {"sem_seg", "panoptic_seg", "instances"}
    assert_same_results(got, torch_results(model, cfg, rgb))


def test_static_model_refuses_another_size_saying_what_to_do(exported):
    runner = OnnxMaskFormer(str(exported[3]))
    with pytest.raises(ValueError, match=r"exported for 64x96 images only \(a static export\); this image is "
                                         r"96x128\. Resize .* --dynamic"):
        runner.raw(random_rgb(96, 128))


def test_metadata_carries_the_configs_inference_settings(exported):
    model, _, cfg, path, _ = exported
    meta = OnnxMaskFormer(str(path)).meta
    assert meta["size"] == list(SIZE) and meta["size_divisibility"] == 32
    assert meta["thing_ids"] == model.thing_ids() and meta["object_mask_threshold"] == 0.0
    assert meta["pad_value_rgb"] == pytest.approx(list(cfg.MODEL.PIXEL_MEAN))


def test_runner_needs_only_onnxruntime_and_numpy(exported, tmp_path):
    """The four files, copied out of the package, run with torch made unimportable."""
    for name in ("export/onnx_runtime.py", "export/numpy_postprocess.py", "export/metadata.py",
                 "modeling/panoptic_segments.py"):
        shutil.copy(REPO / "mask2former_dinat" / name, tmp_path / name.split("/")[1])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        from onnx_runtime import OnnxMaskFormer
        result = OnnxMaskFormer({str(exported[3])!r}).predict(np.full((64, 96, 3), 120, np.uint8))
        assert "mask2former_dinat" not in sys.modules
        print(sorted(result), result["panoptic_seg"][0].shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['instances', 'panoptic_seg', 'sem_seg'] (64, 96)"


def test_not_an_exported_model_is_refused_clearly(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="onnxruntime cannot load .*broken.onnx.*tools/export_model.py"):
        OnnxMaskFormer(str(path))
    with pytest.raises(ValueError, match="unknown 'mask2former_dinat' metadata version"):
        metadata.loads('{"format_version": 99}', "x.onnx")


def test_onnx_demo_draws_the_panoptic_segments(exported, tmp_path):
    """demo/onnx_demo.py on a picture of another size: resized to the static model's, drawn."""
    import cv2

    sys.path.insert(0, str(REPO / "demo"))
    try:
        import onnx_demo
    finally:
        sys.path.remove(str(REPO / "demo"))
    picture = tmp_path / "in.png"
    cv2.imwrite(str(picture), random_rgb(50, 70, seed=6)[:, :, ::-1])
    out = tmp_path / "vis" / "in.png"
    assert onnx_demo.main(["--onnx", str(exported[3]), "--input", str(picture), "--output", str(tmp_path / "vis"),
                           "--config-file", str(REPO / published_config("coco", "panoptic"))]) == 0
    drawing = cv2.imread(str(out))
    resized = cv2.resize(random_rgb(50, 70, seed=6), (SIZE[1], SIZE[0]), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    assert drawing.shape == (*SIZE, 3)
    assert np.abs(drawing.astype(int) - resized).mean() > 5  # segments were painted over the picture


def test_onnx_demo_names_a_missing_model(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "demo"))
    try:
        import onnx_demo
    finally:
        sys.path.remove(str(REPO / "demo"))
    assert onnx_demo.main(["--onnx", str(tmp_path / "none.onnx"), "--input", "x.png", "--output", str(tmp_path)]) == 2
    assert "none.onnx" in capsys.readouterr().err
