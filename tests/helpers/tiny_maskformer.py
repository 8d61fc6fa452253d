"""The tiny MaskFormer of the model and test-time-augmentation tests: the published COCO panoptic
config made tiny (helpers.configs), with NUM_CLASSES classes of which THING_IDS are things."""
import torch
from detectron2.data.catalog import Metadata
from helpers.configs import COCO_PANOPTIC, tiny_cfg

import mask2former_dinat  # noqa: F401  (registers the components)
from mask2former_dinat.modeling.maskformer_model import MaskFormer

NUM_CLASSES = 5
THING_IDS = (0, 1, 2)


def tiny_maskformer_cfg(semantic_on=True, panoptic_on=False, instance_on=False):
    """The published COCO panoptic config shrunk to a model that runs in well under a second."""
    return tiny_cfg(
        COCO_PANOPTIC,
        "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", (), "DATASETS.TEST", (),
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES,
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", semantic_on,
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", panoptic_on,
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON", instance_on,
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.0,
        "TEST.DETECTIONS_PER_IMAGE", 10,
        num_heads=(1, 2, 2, 4), dilations=((2,), (1,), (1,), (1,)), dec_layers=3, train_num_points=64,
    )


def tiny_maskformer(**test_flags):
    return MaskFormer(
        tiny_maskformer_cfg(**test_flags),
        metadata=Metadata(thing_dataset_id_to_contiguous_id={i + 1: i for i in THING_IDS}),
    )


def random_image(h, w):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
