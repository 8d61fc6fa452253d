#!/usr/bin/env python
"""Segment images, a video or the webcam with a Mask2Former-DiNAT model and draw the results.

    python demo/demo.py --config-file configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_IN21k_384_bs16_100ep.yaml \\
        --input photos/ --output vis/ --opts MODEL.WEIGHTS <trained checkpoint: file or http(s) URL>

Exit status: 0 done; 1 some inputs could not be read or written (each one is named, the others
were processed); 2 the run could not start (bad option, missing file, config or checkpoint
problem); 130 stopped with Ctrl-C.
"""
import argparse
import contextlib
import glob
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence, Tuple

import cv2
import torch
import tqdm
import yaml
from PIL import Image

import mask2former_dinat  # noqa: F401,I001  (registers the model and datasets)
from detectron2.config import CfgNode
from detectron2.data.detection_utils import read_image
from mask2former_dinat import get_cfg
from mask2former_dinat.data.datasets import register_datasets_file
from mask2former_dinat.data.fit_config import fit_config_for_drawing

from predictor import VisualizationDemo

WINDOW_NAME = "Mask2Former-DiNAT"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_VIDEO_FPS = 30.0
ESC = 27

logger = logging.getLogger("demo")


class DemoError(Exception):
    """A problem that stops the run; the message names it and says what to do."""


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Mask2Former-DiNAT demo: draw the panoptic, instance or semantic segmentation "
        "of images, a video or the webcam.",
        epilog="Without --output the results are shown in a window (needs an OpenCV build with GUI "
        "support and a display); press a key for the next image, ESC to stop.",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="a config file, e.g. under configs/")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", metavar="PATH",
        help="image files, globs ('photos/*.jpg') or folders (their image files, sorted)",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the webcam (camera 0); ESC or Ctrl-C stops")
    parser.add_argument(
        "--output", metavar="PATH",
        help="images: a file (one input) or a folder that gets <input name> per image (created if missing; "
        "required for several inputs); video/webcam: a .mp4 file or a folder that gets <input name>.mp4. "
        "A path without an extension is a folder",
    )
    parser.add_argument(
        "--confidence-threshold", type=_threshold, default=0.5, metavar="T",
        help="draw only instances with a score of at least T (default 0.5)",
    )
    parser.add_argument(
        "--datasets", metavar="FILE.yaml",
        help="a datasets file (see README, 'Train on your data'): its class names are drawn; "
        "DATASETS.TEST picks one of its datasets (default: the first)",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu "
        "(MODEL.DEVICE defaults to cuda when available, else cpu)",
    )
    return parser


def setup_cfg(args) -> CfgNode:
    """The config of --config-file with --opts merged in; MODEL.DEVICE cuda if available, else cpu, unless given."""
    if not os.path.isfile(args.config_file):
        raise DemoError(f"config file not found: {args.config_file}")
    if len(args.opts) % 2:
        raise DemoError(f"--opts takes KEY VALUE pairs, got an odd number of items: {' '.join(args.opts)}")
    cfg = get_cfg()
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError, OSError, yaml.YAMLError) as e:
        raise DemoError(f"cannot use config {args.config_file} with --opts {args.opts}: {e}") from None
    if args.datasets:
        try:
            for line in fit_config_for_drawing(cfg, register_datasets_file(args.datasets)):
                logger.info("config fitted to the datasets file: %s", line)
        except ValueError as e:
            raise DemoError(str(e)) from None
    if "MODEL.DEVICE" not in args.opts[0::2]:
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    elif cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise DemoError(f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but CUDA is not available; pass --opts MODEL.DEVICE cpu")
    cfg.freeze()
    return cfg


# ---------------------------------------------------------------------------------------------
# Inputs and outputs, checked before the model is built
# ---------------------------------------------------------------------------------------------


def expand_inputs(paths: Sequence[str]) -> Tuple[List[str], bool]:
    """Image files of --input: files as given, folders as their image files (sorted), globs as
    their matching files (sorted). Returns (files, whether the inputs name a set of images:
    several paths, a folder or a glob)."""
    files, missing, many = [], [], len(paths) > 1
    for path in paths:
        path = os.path.expanduser(path)
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, name) for name in os.listdir(path)
                if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
            )
            if not found:
                raise DemoError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            files += found
            many = True
        elif os.path.isfile(path):
            files.append(path)
        elif any(c in path for c in "*?["):
            found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
            if not found:
                raise DemoError(f"no file matches --input {path!r}")
            files += found
            many = True
        else:
            missing.append(path)
    if missing:
        raise DemoError("input file not found: " + ", ".join(missing))
    return files, many


def _writable_name(name: str) -> str:
    """`name`, or with a .png extension where OpenCV cannot write its type (e.g. .gif)."""
    return name if cv2.haveImageWriter(name) else os.path.splitext(name)[0] + ".png"


def _is_folder_path(path: str) -> bool:
    """An existing folder, a path ending in a slash, or a path without an extension."""
    return os.path.isdir(path) or path.endswith(("/", os.sep)) or not os.path.splitext(path)[1]


def image_output_paths(files: Sequence[str], many: bool, output: str) -> List[str]:
    """Where each visualization goes: <output>/<input name> when --output is a folder (always the
    case for a set of images), else the file --output. Creates the folders."""
    if many or _is_folder_path(output):
        if os.path.exists(output) and not os.path.isdir(output):
            raise DemoError(
                f"--output {output} is a file, but with several input images it must be a folder "
                "(give a folder name; it is created if missing)" if many else
                f"--output {output} is an existing file without an image extension; give a folder or "
                "an image file name such as vis.png"
            )
        outputs = [os.path.join(output, _writable_name(os.path.basename(f))) for f in files]
        seen = {}
        for f, out in zip(files, outputs):
            if out in seen:
                raise DemoError(f"{seen[out]} and {f} would both be written to {out}; process them separately")
            seen[out] = f
        folder = output
    else:
        if not cv2.haveImageWriter(output):
            raise DemoError(f"--output {output}: OpenCV cannot write this image type; use e.g. .png or .jpg")
        outputs = [output]
        folder = os.path.dirname(output)
    for f, out in zip(files, outputs):
        if os.path.abspath(f) == os.path.abspath(out):
            raise DemoError(f"--output would overwrite the input {f}; choose another file or folder")
    _make_folder(folder)
    return outputs


def video_output_path(output: str, source_name: str) -> str:
    """--output for a video: a .mp4 file, or a folder that gets <source name>.mp4. Creates the folder."""
    if _is_folder_path(output):
        if os.path.exists(output) and not os.path.isdir(output):
            raise DemoError(f"--output {output} is a file without the .mp4 extension; give a .mp4 file or a folder")
        _make_folder(output)
        return os.path.join(output, os.path.splitext(os.path.basename(source_name))[0] + ".mp4")
    if os.path.splitext(output)[1].lower() != ".mp4":
        raise DemoError(f"--output {output}: videos are written as .mp4 (mp4v); give a .mp4 file or a folder")
    _make_folder(os.path.dirname(output))
    return output


def _make_folder(folder: str) -> None:
    """Creates the output folder and makes sure a file can be written into it (a probe file,
    deleted), so that an unwritable output fails before the model is built."""
    folder = folder or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DemoError(f"cannot create the output folder {folder}: {e.strerror or e}") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".demo-write-test-"):
            pass
    except OSError as e:
        raise DemoError(
            f"cannot write into the output folder {folder}: {e.strerror or e}; choose another --output"
        ) from None


def gui_problem() -> Optional[str]:
    """Why OpenCV cannot open windows here (None if it can, as far as can be told without opening one)."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI" and value.strip().upper() == "NONE":
            return "this OpenCV build has no GUI support (e.g. opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display (DISPLAY is not set)"
    return None


def _require_gui() -> None:
    problem = gui_problem()
    if problem:
        raise DemoError(f"cannot show the results in a window: {problem}. Pass --output to write them to files.")


def open_video(path: str) -> cv2.VideoCapture:
    if not os.path.isfile(path):
        raise DemoError(f"video file not found: {path}")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DemoError(f"cannot open video {path}: OpenCV cannot decode it (not a video, or a codec it lacks)")
    return capture


def open_webcam() -> cv2.VideoCapture:
    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        raise DemoError("cannot open the webcam (camera 0): is one connected, and not in use by another program?")
    return capture


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def read_image_bgr(path: str):
    """uint8 [H, W, 3] BGR of an image file (EXIF rotation applied; gray and RGBA become 3-channel)."""
    try:
        return read_image(path, format="BGR")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read {path} as an image ({e})") from None


def _summary(predictions: dict, threshold: float) -> str:
    if "panoptic_seg" in predictions:
        return f"panoptic segmentation, {len(predictions['panoptic_seg'][1])} segments"
    if "instances" in predictions:
        scores = predictions["instances"].scores
        return f"{int((scores >= threshold).sum())} instances with score >= {threshold}"
    return "semantic segmentation"


def _show(frame_bgr, wait_ms: int) -> bool:
    """Shows a frame; returns False when ESC was pressed."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW_NAME, frame_bgr)
        return cv2.waitKey(wait_ms) != ESC
    except cv2.error as e:
        raise DemoError(f"cannot show the results in a window ({e}). Pass --output to write them to files.") from None


def _write_image(path: str, image_bgr) -> Optional[str]:
    """Writes an image file; returns why that failed, or None."""
    try:
        return None if cv2.imwrite(path, image_bgr) else "OpenCV could not write it"
    except cv2.error as e:
        return str(e).strip()


def process_images(demo: VisualizationDemo, files: Sequence[str], outputs: Optional[Sequence[str]]) -> int:
    """Draws each image into its output file (or a window); an image that cannot be read or
    written is logged and skipped. Returns the exit status."""
    failed = []
    try:
        for i, path in enumerate(tqdm.tqdm(files, disable=len(files) < 2, unit="image")):
            try:
                image = read_image_bgr(path)
            except ValueError as e:
                logger.error("skipped: %s", e)
                failed.append(path)
                continue
            start = time.perf_counter()
            predictions, vis = demo.run_on_image(image)
            logger.info("%s: %s in %.2fs", path, _summary(predictions, demo.confidence_threshold), time.perf_counter() - start)
            drawn = cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)
            if outputs is None:
                if not _show(drawn, 0):
                    break
                continue
            problem = _write_image(outputs[i], drawn)
            if problem:
                logger.error("could not write %s (%s)", outputs[i], problem)
                failed.append(path)
    finally:
        if outputs is None:
            cv2.destroyAllWindows()
    if failed:
        logger.error("%d of %d images failed: %s", len(failed), len(files), ", ".join(failed))
        return 1
    return 0


def _frame_rate(capture: cv2.VideoCapture, name: str) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and fps > 0):
        logger.warning("%s reports no frame rate; writing at %g fps", name, DEFAULT_VIDEO_FPS)
        return DEFAULT_VIDEO_FPS
    return fps


def process_stream(demo: VisualizationDemo, capture: cv2.VideoCapture, name: str, output: Optional[str]) -> int:
    """Draws every frame of an opened capture into `output` (mp4v .mp4 at the input's frame rate
    and size) or a window (ESC stops). Returns the exit status."""
    fps = _frame_rate(capture, name)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    writer, frames = None, 0
    frames_drawn = demo.run_on_video(capture)
    try:
        for drawn in tqdm.tqdm(frames_drawn, total=total if total > 0 else None, unit="frame"):
            if output is None:
                frames += 1
                if not _show(drawn, 1):
                    break
                continue
            if writer is None:  # opened on the first frame, at its size
                height, width = drawn.shape[:2]
                writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    raise DemoError(f"cannot write video {output}: OpenCV could not open it for writing")
            writer.write(drawn)
            frames += 1
    except KeyboardInterrupt:
        if writer is not None:
            _finish_video(writer)
            writer = None
            logger.warning(
                "stopped (Ctrl-C) after %d of %s frames: %s holds the %d frames drawn so far (a playable video)",
                frames, total if total > 0 else "?", output, frames,
            )
        else:
            logger.warning("stopped (Ctrl-C) after %d frames", frames)
        return 130
    finally:
        frames_drawn.close()
        if writer is not None:
            _finish_video(writer)
        if output is None:
            cv2.destroyAllWindows()
    if frames == 0:
        raise DemoError(f"no frame could be read from {name}")
    if output is not None:
        logger.info("wrote %d frames (%g fps) to %s", frames, fps, output)
    return 0


def _finish_video(writer: cv2.VideoWriter) -> None:
    """Closes the video file (writes its index, without which it does not play); a second
    Ctrl-C meanwhile is ignored, since it would leave the file unplayable."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _on_main_thread() else None
    try:
        writer.release()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def run(args) -> int:
    """The demo for parsed arguments; raises DemoError when it cannot proceed."""
    # Inputs and outputs are checked before the model is built: a typo should not wait for it.
    if args.input:
        files, many = expand_inputs(args.input)
        outputs = image_output_paths(files, many, args.output) if args.output else None
        if outputs is None:
            _require_gui()
        return process_images(_build_demo(args), files, outputs)

    name = args.video_input or "webcam"
    capture = open_video(args.video_input) if args.video_input else open_webcam()
    try:
        output = None
        if args.output:
            output = video_output_path(args.output, name)
            if os.path.abspath(output) == os.path.abspath(name):
                raise DemoError(f"--output would overwrite the input {name}; choose another file or folder")
        else:
            _require_gui()
        return process_stream(_build_demo(args), capture, name, output)
    finally:
        capture.release()


def _build_demo(args) -> VisualizationDemo:
    cfg = setup_cfg(args)
    advice = "MODEL.WEIGHTS must be a checkpoint of this config's model (pass it with --opts MODEL.WEIGHTS <file or http(s) URL>)."
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(os.path.expanduser(weights)):
        # Checked here because the checkpointer looks only after the (possibly large) model is built.
        raise DemoError(f"checkpoint file not found: {weights}. {advice}")
    try:
        return VisualizationDemo(cfg, confidence_threshold=args.confidence_threshold, config_name=args.config_file)
    except (OSError, ValueError) as e:
        raise DemoError(f"cannot set up the model: {e}\n{advice}") from None


@contextlib.contextmanager
def _log_to_stderr():
    """INFO and above of every logger to stderr, for the duration of one main() call."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(name)s] %(levelname)s: %(message)s", "%H:%M:%S"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (argparse exits with 2 on a bad option)."""
    args = get_parser().parse_args(argv)
    with _log_to_stderr():
        try:
            return run(args)
        except DemoError as e:
            logger.error("%s", e)
            return 2
        except KeyboardInterrupt:
            logger.warning("stopped (Ctrl-C)")
            return 130


if __name__ == "__main__":
    sys.exit(main())
