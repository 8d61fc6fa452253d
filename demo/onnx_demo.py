#!/usr/bin/env python
"""Draw what an exported ONNX model (tools/export_model.py --format onnx) predicts, run with
onnxruntime and post-processed with NumPy (mask2former_dinat/export/onnx_runtime.py): the same
pictures as demo/demo.py (panoptic segments, else instances above --confidence-threshold, else
the semantic argmax), drawn with its helpers and detectron2's Visualizer.

    python demo/onnx_demo.py --onnx model.onnx --input photos/ --output vis/ \
        [--config-file <the exported config, for class names>]

A model exported at one size (static) gets each image resized to that size and drawn at it; a
dynamic one takes images as they are. Exit status: 0 done, 1 some images failed (named),
2 could not start.
"""
import argparse
import os
import sys
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

# demo.py (file listing, output paths, image reading) and predictor.py (class names) live beside this file
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo as torch_demo  # noqa: E402
from detectron2.data import Metadata  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402
from predictor import visualization_metadata  # noqa: E402

from mask2former_dinat.export.onnx_runtime import OnnxMaskFormer  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True, metavar="FILE", help="a model written by tools/export_model.py")
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH", help="image files, globs or folders")
    parser.add_argument("--output", required=True, metavar="PATH", help="a file (one input) or a folder")
    parser.add_argument("--config-file", metavar="FILE", help="the exported model's config, for class names")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="T")
    return parser


def _metadata(config_file: Optional[str], num_classes: int):
    if config_file is None:
        names = [f"class {i}" for i in range(num_classes)]
        return Metadata(name="default (class indices)", thing_classes=names, stuff_classes=names)
    from mask2former_dinat import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    return visualization_metadata(cfg)[0]


def draw(rgb: np.ndarray, result: dict, metadata, threshold: float):
    """The drawing (RGB uint8) of one image's NumPy results."""
    visualizer = Visualizer(rgb, metadata)
    if "panoptic_seg" in result:
        seg, info = result["panoptic_seg"]
        return visualizer.draw_panoptic_seg(torch.from_numpy(seg), [dict(s) for s in info]).get_image()
    if "instances" in result:
        found = result["instances"]
        keep = found["scores"] >= threshold
        instances = Instances(rgb.shape[:2], pred_masks=torch.from_numpy(found["pred_masks"][keep]),
                              pred_boxes=Boxes(torch.from_numpy(found["pred_boxes"][keep])),
                              scores=torch.from_numpy(found["scores"][keep]),
                              pred_classes=torch.from_numpy(found["pred_classes"][keep]))
        return visualizer.draw_instance_predictions(instances).get_image()
    return visualizer.draw_sem_seg(result["sem_seg"].argmax(0)).get_image()


def run(args) -> int:
    runner = OnnxMaskFormer(args.onnx)
    metadata = _metadata(args.config_file, runner.meta["num_classes"])
    files, many = torch_demo.expand_inputs(args.input)
    outputs = torch_demo.image_output_paths(files, many, args.output)
    failed = 0
    for path, out in zip(files, outputs):
        try:
            rgb = np.ascontiguousarray(torch_demo.read_image_bgr(path)[:, :, ::-1])
            if runner.meta["size"] is not None:
                height, width = runner.meta["size"]
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
            drawing = draw(rgb, runner.predict(rgb), metadata, args.confidence_threshold)
            if not cv2.imwrite(out, drawing[:, :, ::-1]):
                raise ValueError(f"OpenCV could not write {out}")
            print(f"{path}: wrote {out}")
        except ValueError as e:
            print(f"{path}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, ImportError, OSError, torch_demo.DemoError) as e:
        print(f"onnx_demo: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
