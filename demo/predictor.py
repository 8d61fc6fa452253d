"""The demo's model wrapper and drawing: predictions for a BGR image or a video's frames,
drawn with detectron2's Visualizer (images) and VideoVisualizer (videos)."""
import functools
import logging
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

import mask2former_dinat  # noqa: F401,I001  (first: registers the model and datasets, quiets detectron2's import warnings)
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.engine.defaults import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

from mask2former_dinat.checkpoint import Mask2FormerCheckpointer

__all__ = ["Predictor", "VisualizationDemo", "as_bgr_image", "visualization_metadata"]

logger = logging.getLogger(__name__)


def as_bgr_image(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] (gray), [H, W, 1], [H, W, 3] (BGR) or [H, W, 4] (BGRA) -> contiguous uint8 [H, W, 3] BGR.

    The alpha channel is dropped (the colour under a transparent pixel is kept as stored).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (values 0-255), got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(
            f"expected an image [H, W] (gray), [H, W, 3] (BGR) or [H, W, 4] (BGRA), got shape {tuple(image.shape)}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {tuple(image.shape)})")
    return np.ascontiguousarray(image)


def _default_metadata(num_classes: int) -> Metadata:
    """Names "class 0".."class K-1"; every class counts as a thing, so panoptic inference can run."""
    names = [f"class {i}" for i in range(num_classes)]
    ids = {i: i for i in range(num_classes)}
    return Metadata(
        name="default (class indices)",
        thing_classes=names,
        stuff_classes=names,
        thing_dataset_id_to_contiguous_id=ids,
        stuff_dataset_id_to_contiguous_id=ids,
    )


def _indexed_by_model_ids(classes, colors, num_classes: int) -> Optional[Tuple[List[str], Optional[list]]]:
    if classes is None or len(classes) != num_classes:
        return None
    return list(classes), (list(colors) if colors is not None and len(colors) == num_classes else None)


def visualization_metadata(cfg) -> Tuple[Metadata, bool]:
    """Class names and colours indexed by the model's class ids, from the metadata of
    cfg.DATASETS.TEST[0]; returns (metadata, is_default).

    The model numbers its classes 0..NUM_CLASSES-1 for every task, but panoptic datasets list
    only the thing classes under `thing_classes` (while their thing ids count in the list of all
    classes, `stuff_classes`). detectron2's Visualizer looks thing labels up in `thing_classes`,
    so here both lists hold all NUM_CLASSES names. An unregistered dataset name (or names that
    do not fit NUM_CLASSES) falls back to "class 0".."class K-1".
    """
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    meta = MetadataCatalog.get(name) if name else Metadata()
    stuff = _indexed_by_model_ids(meta.get("stuff_classes"), meta.get("stuff_colors"), num_classes)
    things = _indexed_by_model_ids(meta.get("thing_classes"), meta.get("thing_colors"), num_classes)
    if stuff is None and things is None:
        if name is None:
            why = "DATASETS.TEST is empty"
        elif meta.get("stuff_classes") is None and meta.get("thing_classes") is None:
            why = f"dataset {name!r} (DATASETS.TEST[0]) is not registered"
        else:
            why = f"the class names of dataset {name!r} (DATASETS.TEST[0]) do not number NUM_CLASSES={num_classes}"
        logger.warning(
            "%s: showing classes as 'class 0'..'class %d'. Set DATASETS.TEST to the dataset the weights were "
            "trained on for real class names.", why, num_classes - 1,
        )
        return _default_metadata(num_classes), True
    stuff, things = stuff or things, things or stuff
    fields = {"name": name or "N/A", "stuff_classes": stuff[0], "thing_classes": things[0]}
    if stuff[1] is not None:
        fields["stuff_colors"] = stuff[1]
    if things[1] is not None:
        fields["thing_colors"] = things[1]
    return Metadata(**fields), False


class Predictor(DefaultPredictor):
    """detectron2's DefaultPredictor (BGR image in, the model's predictions for it out), with
    the weights of cfg.MODEL.WEIGHTS (a path or an http(s) URL) loaded strictly through
    Mask2FormerCheckpointer: a checkpoint that does not fit the model raises
    CheckpointMismatchError instead of leaving part of the model random.
    """

    def __init__(self, cfg, config_name: Optional[str] = None):
        # DefaultPredictor.__init__ is not called: it loads weights non-strictly.
        self.cfg = cfg.clone()
        if self.cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {self.cfg.INPUT.FORMAT!r}")
        self.input_format = self.cfg.INPUT.FORMAT
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(self.cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(self.cfg.DATASETS.TEST[0])
        if self.cfg.MODEL.WEIGHTS:
            Mask2FormerCheckpointer(self.model, strict=True, config_name=config_name).load(self.cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the model keeps its random initial weights.")
        self.aug = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MIN_SIZE_TEST], self.cfg.INPUT.MAX_SIZE_TEST
        )


class VisualizationDemo:
    """Runs the model of a config on images or video frames and draws what it predicts.

    Drawn, in this order of preference: the panoptic segmentation (segments with their class
    names), else the instances with score >= confidence_threshold, else the argmax of the
    semantic segmentation.
    """

    def __init__(
        self,
        cfg,
        instance_mode: ColorMode = ColorMode.IMAGE,
        *,
        confidence_threshold: float = 0.5,
        config_name: Optional[str] = None,
    ):
        """
        Args:
            cfg: a config from mask2former_dinat.get_cfg(); cfg.MODEL.WEIGHTS the trained model.
            instance_mode: detectron2's ColorMode for images (videos take IMAGE or IMAGE_BW).
            confidence_threshold: instances with a lower score are not drawn.
            config_name: the config file, named in checkpoint mismatch reports.
        """
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        self.metadata, is_default = visualization_metadata(cfg)
        self.instance_mode = instance_mode
        self.confidence_threshold = confidence_threshold
        self.cpu_device = torch.device("cpu")
        self.predictor = Predictor(cfg, config_name=config_name)
        model = self.predictor.model
        needs_things = getattr(model, "panoptic_on", False) or getattr(model, "instance_on", False)
        if needs_things and not _has_thing_ids(getattr(model, "metadata", None)):
            if not is_default:
                raise ValueError(
                    f"panoptic and instance results need the thing classes of DATASETS.TEST[0]={self.metadata.name!r}, "
                    "whose metadata has no thing_dataset_id_to_contiguous_id: set DATASETS.TEST to the dataset "
                    "the model was trained on, or turn off MODEL.MASK_FORMER.TEST.PANOPTIC_ON and INSTANCE_ON"
                )
            # No dataset metadata at all: every class counts as a thing.
            model.metadata = self.metadata

    def run_on_image(self, image: np.ndarray) -> Tuple[dict, VisImage]:
        """image: uint8 [H, W, 3] BGR (also [H, W] gray or [H, W, 4] BGRA).
        Returns (the model's predictions, the drawing as a VisImage of size H x W)."""
        image = as_bgr_image(image)
        predictions = self.predictor(image)
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        vis_output = self._draw(
            predictions, visualizer.draw_panoptic_seg, visualizer.draw_instance_predictions, visualizer.draw_sem_seg
        )
        return predictions, vis_output

    def run_on_video(self, video_capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Reads frames from an opened cv2.VideoCapture until it ends; yields each frame drawn,
        uint8 [H, W, 3] BGR of the frame's size. Instance colours follow instances across frames."""
        if self.instance_mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            raise ValueError(f"videos are drawn in ColorMode.IMAGE or IMAGE_BW, not {self.instance_mode}")
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)
        while True:
            ok, frame = video_capture.read()
            if not ok:
                break
            frame = as_bgr_image(frame)
            rgb = frame[:, :, ::-1]
            vis = self._draw(
                self.predictor(frame),
                functools.partial(video_visualizer.draw_panoptic_seg_predictions, rgb),
                functools.partial(video_visualizer.draw_instance_predictions, rgb),
                functools.partial(video_visualizer.draw_sem_seg, rgb),
            )
            yield cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)

    def _draw(self, predictions: dict, draw_panoptic, draw_instances, draw_sem_seg) -> VisImage:
        """Draws the panoptic segmentation, else the confident instances, else the semantic argmax."""
        if "panoptic_seg" in predictions:
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            # The visualizer adds an "area" to each segment: keep the caller's predictions as they were.
            return draw_panoptic(panoptic_seg.to(self.cpu_device), [dict(s) for s in segments_info])
        if "instances" in predictions:
            instances = predictions["instances"].to(self.cpu_device)
            return draw_instances(instances[instances.scores >= self.confidence_threshold])
        if "sem_seg" in predictions:
            return draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to(self.cpu_device))
        raise ValueError(f"the model returned none of panoptic_seg, instances, sem_seg (got {sorted(predictions)})")


def _has_thing_ids(metadata) -> bool:
    return metadata is not None and metadata.get("thing_dataset_id_to_contiguous_id") is not None
