"""Test-time augmentation for semantic segmentation (cfg.TEST.AUG)."""
import copy
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import DatasetMapperTTA
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a semantic-segmentation model (e.g. MaskFormer with SEMANTIC_ON) and averages
    its "sem_seg" class probabilities over the augmented copies of each image that
    detectron2's DatasetMapperTTA makes: every TEST.AUG.MIN_SIZES short side (long side
    at most TEST.AUG.MAX_SIZE), each also horizontally flipped when TEST.AUG.FLIP.
    The model resizes every prediction to the input's "height"/"width", flipped ones are
    flipped back, so the average is at the original resolution.

    Takes and returns detectron2's list of dicts; an input may give "file_name" instead
    of "image". Returns [{"sem_seg": [K, height, width]}].
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper: Optional[DatasetMapperTTA] = None):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not getattr(model, "semantic_on", True):
            raise ValueError(
                "SemanticSegmentorWithTTA averages 'sem_seg' outputs: build the model with "
                "MODEL.MASK_FORMER.TEST.SEMANTIC_ON True"
            )
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.input_format = cfg.INPUT.FORMAT

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        return [self._inference_one_image(self._with_image(x)) for x in batched_inputs]

    def _with_image(self, dataset_dict: Dict) -> Dict:
        """A shallow copy with "image" (uint8 [3, H, W], CPU) and "height"/"width" filled in."""
        ret = copy.copy(dataset_dict)
        if "image" not in ret:
            if "file_name" not in ret:
                raise ValueError("each input needs an 'image' tensor [3, H, W] or a 'file_name'")
            image = read_image(ret.pop("file_name"), self.input_format)
            ret["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        image = ret["image"]
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise ValueError(f"'image' must be a tensor [3, H, W]; got {getattr(image, 'shape', type(image))}")
        ret["image"] = image.cpu()
        ret.setdefault("height", image.shape[1])
        ret.setdefault("width", image.shape[2])
        return ret

    def _inference_one_image(self, dataset_dict: Dict) -> Dict:
        augmented_inputs = self.tta_mapper(dataset_dict)
        total = None
        for augmented in augmented_inputs:
            transforms = augmented.pop("transforms")
            with torch.no_grad():
                sem_seg = self.model([augmented])[0]["sem_seg"]
            if any(isinstance(t, HFlipTransform) for t in transforms.transforms):
                sem_seg = sem_seg.flip(dims=[2])
            total = sem_seg if total is None else total + sem_seg
        return {"sem_seg": total / len(augmented_inputs)}
