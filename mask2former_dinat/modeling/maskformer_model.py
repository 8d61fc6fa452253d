"""MaskFormer: the meta-architecture of Mask2Former (backbone -> head; losses or inference)."""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from .criterion import build_criterion
from .inference import instance_inference, panoptic_inference, semantic_inference

__all__ = ["MaskFormer"]


def _to_output_size(x: torch.Tensor, image_size: Sequence[int], height: int, width: int) -> torch.Tensor:
    """[C, H_pad, W_pad] -> [C, height, width]: crop the padding, resize (detectron2's
    sem_seg_postprocess), skipped when it would change nothing (a same-size bilinear resize
    is the identity)."""
    if tuple(x.shape[-2:]) == tuple(image_size) == (height, width):
        return x
    return sem_seg_postprocess(x, image_size, height, width)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification for semantic, panoptic and instance segmentation.

    Takes detectron2's list of dicts: "image" (uint8 [3, H, W] in the model's input format),
    optional "height"/"width" (output size, default the image size) and, in training,
    "instances" (gt_classes, gt_masks [N, H, W]). Training returns the weighted losses;
    inference returns per image {"sem_seg": [K, height, width]} and/or
    {"panoptic_seg": (int32 [height, width], segments_info)} and/or {"instances": Instances}.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata=None,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float, float, float],
        pixel_std: Tuple[float, float, float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
    ):
        """
        Args:
            backbone: a detectron2 Backbone.
            sem_seg_head: maps backbone features to {"pred_logits", "pred_masks", "aux_outputs"}.
            criterion: maps (outputs, targets) to losses; its `weight_dict` weights them.
            num_queries: number of queries of the head.
            object_mask_threshold, overlap_threshold: panoptic inference thresholds.
            metadata: detectron2 Metadata with `thing_dataset_id_to_contiguous_id`, needed
                by panoptic and instance inference (read when they run).
            size_divisibility: pad images to a multiple of this; < 0 uses the backbone's.
            sem_seg_postprocess_before_inference: resize the masks to the output size before
                semantic inference (always the case for panoptic / instance inference).
            pixel_mean, pixel_std: per-channel normalisation of the input images.
            semantic_on, panoptic_on, instance_on: which results inference returns.
            test_topk_per_image: instances kept per image.
        """
        super().__init__()
        if not (semantic_on or panoptic_on or instance_on):
            raise ValueError(
                "MaskFormer: MODEL.MASK_FORMER.TEST.SEMANTIC_ON, PANOPTIC_ON and INSTANCE_ON are all False; "
                "turn on at least one"
            )
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # Not part of checkpoints: they come from the config.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.panoptic_on = panoptic_on
        self.instance_on = instance_on
        self.test_topk_per_image = test_topk_per_image

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        mf = cfg.MODEL.MASK_FORMER
        dataset_names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_criterion(cfg),
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(dataset_names[0]) if dataset_names else None,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or mf.TEST.PANOPTIC_ON or mf.TEST.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: List[Dict]):
        """See the class docstring for the input and output formats."""
        images = self.preprocess_image(batched_inputs)
        targets = self.prepare_targets(batched_inputs, images) if self.training else None
        outputs = self.sem_seg_head(self.backbone(images.tensor))

        if self.training:
            losses = self.criterion(outputs, targets)
            weights = self.criterion.weight_dict
            return {name: loss * weights[name] for name, loss in losses.items() if name in weights}

        # Masks come at stride 4 of the padded batch: bring them to the padded input size.
        mask_pred_results = F.interpolate(
            outputs["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear", align_corners=False
        )
        mask_cls_results = outputs["pred_logits"]
        del outputs
        results = []
        for mask_cls, mask_pred, x, image_size in zip(
            mask_cls_results, mask_pred_results, batched_inputs, images.image_sizes
        ):
            height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
            results.append(self.inference_one_image(mask_cls, mask_pred, image_size, height, width))
        return results

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalised images, padded into one batch tensor [B, 3, H_pad, W_pad]."""
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError("MaskFormer takes a non-empty list of dicts, each with an 'image' tensor [3, H, W]")
        images = []
        for i, x in enumerate(batched_inputs):
            image = x.get("image") if isinstance(x, dict) else None
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(
                    f"input {i}: 'image' must be a tensor [{self.pixel_mean.shape[0]}, H, W] (channels first, "
                    f"in the config's INPUT.FORMAT); got {got}"
                )
            images.append((image.to(self.device) - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict]:
        """Per image {"labels": [N], "masks": [N, H_pad, W_pad]}: gt masks zero-padded like the image."""
        if any("instances" not in x for x in batched_inputs):
            raise ValueError(
                "MaskFormer training needs 'instances' (gt_classes, gt_masks) in every input dict; "
                "use one of this project's dataset mappers (INPUT.DATASET_MAPPER_NAME)"
            )
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            instances = x["instances"].to(self.device)
            gt_masks = instances.gt_masks
            gt_masks = getattr(gt_masks, "tensor", gt_masks)  # BitMasks or a plain tensor
            padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            targets.append({"labels": instances.gt_classes, "masks": padded})
        return targets

    def inference_one_image(
        self, mask_cls: torch.Tensor, mask_pred: torch.Tensor, image_size: Sequence[int], height: int, width: int
    ) -> Dict:
        """Results of one image from mask_cls [Q, K+1] and mask_pred [Q, H_pad, W_pad]
        (image_size: the unpadded input size; height/width: the requested output size)."""
        result = {}
        if self.sem_seg_postprocess_before_inference:
            mask_pred = retry_if_cuda_oom(_to_output_size)(mask_pred, image_size, height, width)
            mask_cls = mask_cls.to(mask_pred)
        if self.semantic_on:
            sem_seg = retry_if_cuda_oom(semantic_inference)(mask_cls, mask_pred)
            if not self.sem_seg_postprocess_before_inference:
                sem_seg = retry_if_cuda_oom(_to_output_size)(sem_seg, image_size, height, width)
            result["sem_seg"] = sem_seg
        if self.panoptic_on:
            result["panoptic_seg"] = retry_if_cuda_oom(panoptic_inference)(
                mask_cls,
                mask_pred,
                object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold,
                thing_ids=self.thing_ids(),
            )
        if self.instance_on:
            result["instances"] = retry_if_cuda_oom(instance_inference)(
                mask_cls,
                mask_pred,
                topk=self.test_topk_per_image,
                # Panoptic models also predict stuff: keep things only.
                thing_ids=self.thing_ids() if self.panoptic_on else None,
            )
        return result

    def thing_ids(self) -> List[int]:
        """Contiguous ids of the thing classes, from the dataset metadata."""
        mapping = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            name = getattr(self.metadata, "name", None)
            raise ValueError(
                f"panoptic/instance inference needs the thing classes: metadata of dataset {name!r} has no "
                "thing_dataset_id_to_contiguous_id. Register the dataset (import mask2former_dinat) and set "
                "DATASETS.TEST, or turn off MODEL.MASK_FORMER.TEST.PANOPTIC_ON/INSTANCE_ON"
            )
        return sorted(set(mapping.values()))
