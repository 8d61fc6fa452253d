"""demo/demo.py and demo/predictor.py with a tiny random-weight model (saved and loaded back
through the strict checkpointer): outputs of the right size, frame count and rate, each task
drawn, and clear messages for inputs that cannot be used. No test opens a window."""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer
from helpers.configs import REPO, load_config, published_config, tiny_model_opts

from mask2former_dinat.data.synthetic import render_scene, write_video

DEMO_DIR = REPO / "demo"
CONFIG = REPO / published_config("coco", "panoptic")
TINY = [
    *tiny_model_opts(),
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    # A random model is never confident: let every query through, however much of its mask others
    # cover, so that panoptic segments appear on any image.
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0",
]
PANOPTIC = []
INSTANCE = ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "True"]
SEMANTIC = ["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]


def _load_demo_script():
    """demo/demo.py as a module (it imports its sibling `predictor`, as detectron2's demo does)."""
    if str(DEMO_DIR) not in sys.path:
        sys.path.insert(0, str(DEMO_DIR))
    spec = importlib.util.spec_from_file_location("m2f_dinat_demo_script", DEMO_DIR / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_cli = _load_demo_script()
from predictor import Predictor, VisualizationDemo, as_bgr_image, visualization_metadata  # noqa: E402


def tiny_cfg(weights, *extra):
    return load_config(CONFIG, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights), *TINY, *extra)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the tiny model with random weights, in detectron2's {"model": ...} format."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(""))
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def run_demo(weights, *args, opts=()):
    return demo_cli.main(["--config-file", str(CONFIG), *map(str, args), "--opts", "MODEL.WEIGHTS", str(weights), *TINY, *opts])


def scene_bgr(height, width, seed=0):
    image, _, _ = render_scene(np.random.default_rng(seed), height, width)
    return np.ascontiguousarray(image[:, :, ::-1])


def write_image(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def plain_rendering(image_bgr):
    """What the visualizer makes of the image when it draws nothing on it."""
    return Visualizer(image_bgr[:, :, ::-1]).output.get_image()


def read_video(path):
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


# ----------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "output, written",
    [("new/folder/vis.png", "new/folder/vis.png"), ("vis", "vis/scene.png"), ("vis/", "vis/scene.png")],
    ids=["file", "path without extension", "path with slash"],
)
def test_one_image_is_drawn_into_the_output_file_or_folder_at_the_input_size(weights, tmp_path, output, written):
    image = scene_bgr(48, 72)
    source = write_image(tmp_path / "scene.png", image)
    assert run_demo(weights, "--input", source, "--output", f"{tmp_path}/{output}") == 0
    vis = cv2.imread(str(tmp_path / written))
    assert vis.shape == image.shape
    assert not np.array_equal(vis[:, :, ::-1], plain_rendering(image))  # segments were drawn on it


def test_folder_input_writes_each_image_file_into_the_output_folder(weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = {"b.png": (40, 56), "a.jpg": (64, 48), "c.bmp": (33, 51)}
    for name, (h, w) in sizes.items():
        write_image(folder / name, scene_bgr(h, w, seed=h))
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    out = tmp_path / "vis"
    assert run_demo(weights, "--input", folder, "--output", out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(sizes)
    for name, (h, w) in sizes.items():
        assert cv2.imread(str(out / name)).shape == (h, w, 3)
    log = capsys.readouterr().err
    assert log.index("a.jpg:") < log.index("b.png:") < log.index("c.bmp:")  # sorted


def test_glob_input_expands_to_the_matching_files(weights, tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        write_image(tmp_path / name, scene_bgr(32, 40))
    out = tmp_path / "vis"
    assert run_demo(weights, "--input", str(tmp_path / "x*.png"), "--output", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x1.png", "x2.png"]


@pytest.mark.parametrize("output_kind", ["folder", "mp4 file"])
def test_video_output_keeps_the_frame_count_rate_and_size(weights, tmp_path, output_kind):
    source = write_video(tmp_path / "clip.mp4", num_frames=4, height=40, width=56, fps=7)
    source_frames, _ = read_video(source)
    output = tmp_path / "vis" if output_kind == "folder" else tmp_path / "out" / "drawn.mp4"
    assert run_demo(weights, "--video-input", source, "--output", output) == 0
    written = output / "clip.mp4" if output_kind == "folder" else output
    frames, fps = read_video(written)
    assert len(frames) == len(source_frames) == 4
    assert fps == pytest.approx(7)
    assert all(f.shape == (40, 56, 3) for f in frames)


def test_webcam_frames_are_drawn_into_webcam_mp4(weights, tmp_path, monkeypatch):
    # No camera here: camera 0 is played by a video file, through the real capture API.
    source = write_video(tmp_path / "camera.mp4", num_frames=3, height=40, width=56, fps=5)
    real_capture = cv2.VideoCapture
    opened = []

    def camera(index):
        opened.append(index)
        return real_capture(str(source))

    monkeypatch.setattr(demo_cli.cv2, "VideoCapture", camera)
    assert run_demo(weights, "--webcam", "--output", tmp_path / "vis") == 0
    monkeypatch.undo()
    assert opened == [0]
    frames, fps = read_video(tmp_path / "vis" / "webcam.mp4")
    assert len(frames) == 3 and fps == pytest.approx(5) and frames[0].shape == (40, 56, 3)


def test_gray_and_rgba_images_are_drawn_as_three_channel_images(weights, tmp_path):
    image = scene_bgr(40, 56)
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "gray.png", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    write_image(folder / "rgba.png", np.dstack([image, np.full(image.shape[:2], 128, np.uint8)]))
    assert run_demo(weights, "--input", folder, "--output", tmp_path / "out") == 0
    for name in ("gray.png", "rgba.png"):
        assert cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED).shape == (40, 56, 3)


def test_unreadable_images_are_named_and_skipped_and_the_others_drawn(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_image(folder / "good.png", scene_bgr(40, 56))
    (folder / "garbage.jpg").write_bytes(b"this is not a JPEG file")
    (folder / "truncated.png").write_bytes(good.read_bytes()[:200])
    out = tmp_path / "out"
    assert run_demo(weights, "--input", folder, "--output", out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    err = capsys.readouterr().err
    assert f"cannot read {folder / 'garbage.jpg'} as an image" in err
    assert f"cannot read {folder / 'truncated.png'} as an image" in err
    assert "2 of 3 images failed" in err


def test_missing_input_file_is_named_before_the_model_is_built(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo_cli, "VisualizationDemo", None)  # building it would fail loudly
    missing = tmp_path / "nope.jpg"
    assert run_demo(weights, "--input", missing, "--output", tmp_path / "out.png") == 2
    assert f"input file not found: {missing}" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, b"definitely not a video"], ids=["missing", "not a video"])
def test_video_that_cannot_be_opened_is_named(weights, tmp_path, capsys, content):
    video = tmp_path / "clip.mp4"
    if content is not None:
        video.write_bytes(content)
    assert run_demo(weights, "--video-input", video, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    expected = f"video file not found: {video}" if content is None else f"cannot open video {video}"
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_output_that_must_be_a_folder_but_is_a_file_is_refused(weights, tmp_path, capsys):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, scene_bgr(32, 32))
    existing_file = tmp_path / "result.png"
    existing_file.write_bytes(b"")
    assert run_demo(weights, "--input", tmp_path / "a.png", tmp_path / "b.png", "--output", existing_file) == 2
    assert f"--output {existing_file} is a file, but with several input images it must be a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "video_output, message",
    [("vis.avi", "videos are written as .mp4"), ("clip.mp4", "would overwrite the input")],
)
def test_video_output_must_be_a_new_mp4_file_or_a_folder(weights, tmp_path, capsys, video_output, message):
    source = write_video(tmp_path / "clip.mp4", num_frames=2, height=32, width=32, fps=4)
    assert run_demo(weights, "--video-input", source, "--output", tmp_path / video_output) == 2
    assert message in capsys.readouterr().err


def test_no_input_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_cli.main(["--config-file", str(CONFIG)])
    assert exit_info.value.code == 2
    assert "one of the arguments --input --video-input --webcam is required" in capsys.readouterr().err


def test_without_output_and_without_a_gui_it_asks_for_output(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(demo_cli, "gui_problem", lambda: "there is no display (test)")
    source = write_image(tmp_path / "a.png", scene_bgr(32, 32))
    assert run_demo(weights, "--input", source) == 2
    err = capsys.readouterr().err
    assert "cannot show the results in a window: there is no display (test)" in err and "Pass --output" in err


@pytest.mark.parametrize("source_kind", ["images", "video"])
def test_without_output_results_are_shown_until_esc(weights, tmp_path, monkeypatch, source_kind):
    # The window functions are recorded, not called: no window opens.
    shown, waits = [], []
    monkeypatch.setattr(demo_cli, "gui_problem", lambda: None)
    monkeypatch.setattr(demo_cli.cv2, "namedWindow", lambda *args: None)
    monkeypatch.setattr(demo_cli.cv2, "imshow", lambda name, frame: shown.append(frame.shape))
    monkeypatch.setattr(demo_cli.cv2, "waitKey", lambda ms: waits.append(ms) or (demo_cli.ESC if len(waits) == 2 else -1))
    monkeypatch.setattr(demo_cli.cv2, "destroyAllWindows", lambda: shown.append("closed"))
    if source_kind == "images":
        for name in ("a.png", "b.png", "c.png"):
            write_image(tmp_path / name, scene_bgr(32, 40))
        args = ["--input", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    else:
        args = ["--video-input", write_video(tmp_path / "clip.mp4", num_frames=4, height=32, width=40, fps=4)]
    assert run_demo(weights, *args) == 0
    assert shown == [(32, 40, 3), (32, 40, 3), "closed"]  # ESC after the second
    assert waits == ([0, 0] if source_kind == "images" else [1, 1])  # images wait for a key


def test_headless_opencv_is_detected_from_its_build_information(monkeypatch):
    monkeypatch.setattr(demo_cli.cv2, "getBuildInformation", lambda: "  GUI:                  NONE\n")
    assert "no GUI support" in demo_cli.gui_problem()
    monkeypatch.setattr(demo_cli.cv2, "getBuildInformation", lambda: "  GUI:                  GTK3\n")
    monkeypatch.setenv("DISPLAY", ":0")
    assert demo_cli.gui_problem() is None


def test_checkpoint_that_does_not_fit_the_model_is_refused_with_a_key_report(weights, tmp_path, capsys):
    state = torch.load(weights, weights_only=True)["model"]
    dropped = "sem_seg_head.predictor.class_embed.weight"
    del state[dropped]
    partial = tmp_path / "partial.pth"
    torch.save({"model": state}, partial)
    source = write_image(tmp_path / "a.png", scene_bgr(32, 32))
    assert run_demo(partial, "--input", source, "--output", tmp_path / "out.png") == 2
    err = capsys.readouterr().err
    assert "cannot set up the model" in err and dropped in err and "MODEL.WEIGHTS must be a checkpoint" in err
    assert not (tmp_path / "out.png").exists()


def test_missing_checkpoint_file_is_named(tmp_path, capsys):
    source = write_image(tmp_path / "a.png", scene_bgr(32, 32))
    assert run_demo(tmp_path / "model.pth", "--input", source, "--output", tmp_path / "out.png") == 2
    assert f"checkpoint file not found: {tmp_path / 'model.pth'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "opts, message",
    [(["MODEL.NO_SUCH_KEY", "1"], "NO_SUCH_KEY"), (["INPUT.MIN_SIZE_TEST"], "odd number")],
)
def test_bad_opts_are_reported(weights, tmp_path, capsys, opts, message):
    source = write_image(tmp_path / "a.png", scene_bgr(32, 32))
    assert run_demo(weights, "--input", source, "--output", tmp_path / "o.png", opts=opts) == 2
    assert message in capsys.readouterr().err


def test_device_defaults_to_cuda_when_available_and_a_given_device_is_kept(monkeypatch):
    args = demo_cli.get_parser().parse_args(["--config-file", str(CONFIG), "--webcam", "--opts", *TINY])
    monkeypatch.setattr(demo_cli.torch.cuda, "is_available", lambda: False)
    assert demo_cli.setup_cfg(args).MODEL.DEVICE == "cpu"
    monkeypatch.setattr(demo_cli.torch.cuda, "is_available", lambda: True)
    assert demo_cli.setup_cfg(args).MODEL.DEVICE == "cuda"
    args.opts = [*TINY, "MODEL.DEVICE", "cpu"]
    assert demo_cli.setup_cfg(args).MODEL.DEVICE == "cpu"
    monkeypatch.setattr(demo_cli.torch.cuda, "is_available", lambda: False)
    args.opts = [*TINY, "MODEL.DEVICE", "cuda"]
    with pytest.raises(demo_cli.DemoError, match="CUDA is not available; pass --opts MODEL.DEVICE cpu"):
        demo_cli.setup_cfg(args)


def test_confidence_threshold_outside_zero_to_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        demo_cli.main(["--config-file", str(CONFIG), "--webcam", "--confidence-threshold", "1.5"])
    assert "must be between 0 and 1" in capsys.readouterr().err


def test_command_line_runs_as_a_script(weights, tmp_path):
    source = write_image(tmp_path / "a.png", scene_bgr(40, 56))
    output = tmp_path / "vis.png"
    command = [sys.executable, str(DEMO_DIR / "demo.py"), "--config-file", str(CONFIG), "--input", str(source),
               "--output", str(output), "--opts", "MODEL.WEIGHTS", str(weights), *TINY]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(output)).shape == (40, 56, 3)
    assert f"{source}: panoptic segmentation, " in result.stderr


# ----------------------------------------------------------------------------- faults


# sysfs: no one, root included, can create files there.
UNWRITABLE = "/sys"


@pytest.mark.parametrize(
    "source_kind, output, message",
    [
        ("image", f"{UNWRITABLE}/vis.png", f"cannot write into the output folder {UNWRITABLE}: "),
        ("images", f"{UNWRITABLE}/", f"cannot write into the output folder {UNWRITABLE}/: "),
        ("video", f"{UNWRITABLE}/vis.mp4", f"cannot write into the output folder {UNWRITABLE}: "),
        ("video", f"{UNWRITABLE}/new/", f"cannot create the output folder {UNWRITABLE}/new/: "),
    ],
)
def test_unwritable_output_folder_fails_before_the_model_is_built(weights, tmp_path, capsys, monkeypatch,
                                                                  source_kind, output, message):
    monkeypatch.setattr(demo_cli, "VisualizationDemo", None)  # building it would fail loudly
    if source_kind == "video":
        args = ["--video-input", write_video(tmp_path / "clip.mp4", num_frames=2, height=32, width=32, fps=4)]
    else:
        args = ["--input", *(write_image(tmp_path / f"{i}.png", scene_bgr(32, 32)) for i in range(len(source_kind) - 4))]
    assert run_demo(weights, *args, "--output", output) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "choose another --output" in err or message.startswith("cannot create")


def test_truncated_checkpoint_is_named_in_one_message(weights, tmp_path, capsys):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    image = write_image(tmp_path / "a.png", scene_bgr(32, 32))
    assert run_demo(cut, "--input", image, "--output", tmp_path / "vis.png") == 2
    err = capsys.readouterr().err
    assert f"cannot set up the model: {cut} is not a readable PyTorch checkpoint" in err
    assert "truncated or corrupt" in err and "Traceback" not in err


def test_ctrl_c_while_writing_a_video_leaves_a_playable_video_of_the_frames_done(weights, tmp_path):
    total = 200
    source = write_video(tmp_path / "clip.mp4", num_frames=total, height=32, width=40, fps=10)
    output = tmp_path / "vis.mp4"
    command = [sys.executable, str(DEMO_DIR / "demo.py"), "--config-file", str(CONFIG), "--video-input", str(source),
               "--output", str(output), "--opts", "MODEL.WEIGHTS", str(weights), *TINY]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # until the progress bar shows a few frames drawn
            err += os.read(process.stderr.fileno(), 4096) or b""
            counts = [int(n) for n in re.findall(rb"(\d+)/%d" % total, err)]
            if counts and max(counts) >= 3 or process.poll() is not None:
                break
        process.send_signal(signal.SIGINT)
        err += process.communicate(timeout=60)[1]
    finally:
        process.kill()
    text = err.decode(errors="replace")
    assert process.returncode == 130, text[-3000:]
    found = re.search(rf"stopped \(Ctrl-C\) after (\d+) of {total} frames: {re.escape(str(output))} holds the "
                      r"(\d+) frames drawn so far \(a playable video\)", text)
    assert found, text[-3000:]
    done = int(found.group(1))
    assert 3 <= done < total and int(found.group(2)) == done
    frames, fps = read_video(output)
    assert len(frames) == done and fps == pytest.approx(10)
    assert frames[0].shape == (32, 40, 3)


# ----------------------------------------------------------------------------- VisualizationDemo


DRAW_METHODS = ("draw_panoptic_seg", "draw_instance_predictions", "draw_sem_seg")


@pytest.fixture
def draw_calls(monkeypatch):
    """Records which Visualizer draw method runs, and with what."""
    calls = []
    for name in DRAW_METHODS:
        original = getattr(Visualizer, name)

        def recording(self, *args, _name=name, _original=original, **kwargs):
            calls.append((_name, args))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Visualizer, name, recording)
    return calls


@pytest.mark.parametrize(
    "task, method", [(PANOPTIC, "draw_panoptic_seg"), (INSTANCE, "draw_instance_predictions"), (SEMANTIC, "draw_sem_seg")],
    ids=["panoptic", "instance", "semantic"],
)
def test_the_model_output_of_each_task_reaches_its_visualizer_method(weights, draw_calls, task, method):
    demo = VisualizationDemo(tiny_cfg(weights, *task), confidence_threshold=0.0)
    image = scene_bgr(40, 56)
    predictions, vis = demo.run_on_image(image)
    assert [name for name, _ in draw_calls] == [method]
    assert vis.get_image().shape == image.shape
    if method == "draw_sem_seg":
        assert torch.equal(draw_calls[0][1][0], predictions["sem_seg"].argmax(dim=0))


H, W = 64, 160
DRAWN, UNTOUCHED = (slice(None), slice(0, 40)), (slice(None), slice(100, None))


def known_predictions(task):
    """Predictions whose drawing is known: the result of the task covers the left 40 columns only,
    the lower-priority results also cover the right."""
    left = torch.zeros(H, W, dtype=torch.bool)
    left[DRAWN] = True
    sem_seg = torch.zeros(133, H, W)
    sem_seg[3, :, :80] = 1.0
    sem_seg[100, :, 80:] = 1.0
    instances = Instances((H, W))
    right = torch.zeros(H, W, dtype=torch.bool)
    right[:, 110:150] = True
    instances.pred_masks = torch.stack([left, right])
    instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 40.0, 64.0], [110.0, 0.0, 150.0, 64.0]]))
    # Under the threshold 0.5 the right instance is not drawn; in the panoptic case it is above it,
    # so that drawing instances instead of the panoptic segmentation would show.
    instances.scores = torch.tensor([0.9, 0.9 if task == "panoptic" else 0.2])
    instances.pred_classes = torch.tensor([0, 2])
    panoptic = (left.to(torch.int32), [{"id": 1, "isthing": False, "category_id": 120}])
    result = {"sem_seg": sem_seg}
    if task in ("instance", "panoptic"):
        result["instances"] = instances
    if task == "panoptic":
        result["panoptic_seg"] = panoptic
    return result


def _changed(drawn, plain, region):
    return np.abs(drawn[region].astype(int) - plain[region]).mean()


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_each_task_draws_its_result_over_what_it_covers_in_images_and_video_frames(weights, tmp_path, task):
    demo = VisualizationDemo(tiny_cfg(weights), confidence_threshold=0.5)
    demo.predictor = lambda image: known_predictions(task)
    frame_file = write_video(tmp_path / "clip.mp4", num_frames=2, height=H, width=W, fps=4)
    frames, _ = read_video(frame_file)

    capture = cv2.VideoCapture(str(frame_file))
    video_drawn = [f[:, :, ::-1] for f in demo.run_on_video(capture)]
    capture.release()
    image_drawn = [demo.run_on_image(frame)[1].get_image() for frame in frames]

    for drawn, frame in zip(video_drawn + image_drawn, frames + frames):
        plain = plain_rendering(frame)
        assert drawn.shape == plain.shape == (H, W, 3)
        assert _changed(drawn, plain, DRAWN) > 10
        if task == "semantic":  # the argmax covers the whole image
            assert _changed(drawn, plain, UNTOUCHED) > 10
        else:  # panoptic before instances before semantic; the low-score instance is not drawn
            assert np.array_equal(drawn[UNTOUCHED], plain[UNTOUCHED])


def test_instances_below_the_confidence_threshold_are_not_drawn(weights, draw_calls):
    demo = VisualizationDemo(tiny_cfg(weights, *INSTANCE), confidence_threshold=0.0)
    image = scene_bgr(40, 56)
    predictions, _ = demo.run_on_image(image)
    scores = predictions["instances"].scores
    threshold = float(scores.median())
    demo.confidence_threshold = threshold
    _, vis = demo.run_on_image(image)
    drawn = draw_calls[-1][1][0]
    assert 0 < len(drawn) < len(scores)
    assert len(drawn) == int((scores >= threshold).sum()) and bool((drawn.scores >= threshold).all())

    demo.confidence_threshold = 1.0
    _, vis = demo.run_on_image(image)
    assert len(draw_calls[-1][1][0]) == 0
    assert np.array_equal(vis.get_image(), plain_rendering(image))


def test_predictor_loads_the_checkpoint_weights(weights):
    saved = torch.load(weights, weights_only=True)["model"]
    torch.manual_seed(123)  # another random init, overwritten by the checkpoint
    model_state = Predictor(tiny_cfg(weights)).model.state_dict()
    assert model_state.keys() == saved.keys()
    assert all(torch.equal(model_state[k], saved[k]) for k in saved)


def test_run_on_image_takes_gray_bgra_and_bgr_arrays(weights):
    demo = VisualizationDemo(tiny_cfg(weights, *SEMANTIC))
    image = scene_bgr(32, 40)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    for variant in (gray, gray[:, :, None], np.dstack([image, np.zeros((32, 40), np.uint8)]), image):
        _, vis = demo.run_on_image(variant)
        assert vis.get_image().shape == (32, 40, 3)


def test_as_bgr_image_converts_channels_and_rejects_what_is_not_an_image():
    image = scene_bgr(32, 40)[:8, :10].copy()
    assert np.array_equal(as_bgr_image(np.dstack([image, np.zeros((8, 10), np.uint8)])), image)
    gray = image[:, :, 0]
    assert np.array_equal(as_bgr_image(gray), np.repeat(gray[:, :, None], 3, axis=2))
    with pytest.raises(ValueError, match="uint8"):
        as_bgr_image(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"got shape \(8, 10, 2\)"):
        as_bgr_image(image[:, :, :2])
    with pytest.raises(ValueError, match="empty"):
        as_bgr_image(np.zeros((0, 5, 3), np.uint8))


# ----------------------------------------------------------------------------- metadata


def test_class_names_are_indexed_by_model_class_ids_for_coco_panoptic(weights):
    metadata, is_default = visualization_metadata(tiny_cfg(weights))
    assert not is_default
    assert len(metadata.thing_classes) == len(metadata.stuff_classes) == 133
    assert metadata.thing_classes[0] == "person" and metadata.stuff_classes[132] == metadata.thing_classes[132]
    assert len(metadata.thing_colors) == 133


def test_panoptic_thing_labels_use_the_merged_class_list_where_things_are_interleaved(weights):
    # ADE20K panoptic: thing ids count among all 150 classes, so thing_classes alone would mislabel them.
    from detectron2.data import MetadataCatalog

    registered = MetadataCatalog.get("ade20k_panoptic_val")
    cfg = tiny_cfg(weights, "DATASETS.TEST", "('ade20k_panoptic_val',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "150")
    metadata, _ = visualization_metadata(cfg)
    for contiguous_id in registered.thing_dataset_id_to_contiguous_id.values():
        assert metadata.thing_classes[contiguous_id] == registered.stuff_classes[contiguous_id]


def test_unregistered_dataset_falls_back_to_class_indices_and_panoptic_still_runs(weights, caplog):
    cfg = tiny_cfg(weights, "DATASETS.TEST", "('no_such_dataset_for_the_demo',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "133")
    demo = VisualizationDemo(cfg, confidence_threshold=0.0)
    assert "dataset 'no_such_dataset_for_the_demo' (DATASETS.TEST[0]) is not registered" in caplog.text
    assert demo.metadata.thing_classes[5] == "class 5" and len(demo.metadata.stuff_classes) == 133
    predictions, vis = demo.run_on_image(scene_bgr(32, 40))
    assert len(predictions["panoptic_seg"][1]) > 0
    assert vis.get_image().shape == (32, 40, 3)


def test_panoptic_model_with_a_semantic_only_dataset_is_refused_at_construction():
    weights = ""  # random: the checkpoint has 133 classes
    cfg = tiny_cfg(weights, "DATASETS.TEST", "('ade20k_sem_seg_val',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "150")
    with pytest.raises(ValueError, match="need the thing classes of DATASETS.TEST.0.='ade20k_sem_seg_val'"):
        VisualizationDemo(cfg)
    semantic = tiny_cfg(weights, *SEMANTIC, "DATASETS.TEST", "('ade20k_sem_seg_val',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "150")
    VisualizationDemo(semantic, confidence_threshold=0.0)  # semantic results need no thing classes
