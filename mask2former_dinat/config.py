"""Config keys and defaults of this project, one function per component.

The published Mask2Former / DiNAT configs were written against detectron2's
defaults plus its DeepLab project plus the functions below; `get_cfg()` builds
exactly that stack, so a published YAML merges with no unknown keys.
"""
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as get_detectron2_cfg
from detectron2.projects.deeplab import add_deeplab_config

__all__ = ["add_dinat_config", "add_maskformer2_config", "get_cfg"]


def add_dinat_config(cfg):
    """MODEL.DINAT: the DiNAT backbone (published keys, then ours). Each key feeds the DiNAT argument
    of the same name in lower case (modeling/backbone/d2_dinat.py, CONFIG_KEYS), and errors name the key."""
    cfg.MODEL.DINAT = CN()
    cfg.MODEL.DINAT.EMBED_DIM = 64
    cfg.MODEL.DINAT.DEPTHS = [3, 4, 6, 5]
    cfg.MODEL.DINAT.NUM_HEADS = [2, 4, 8, 16]
    cfg.MODEL.DINAT.KERNEL_SIZE = 7
    cfg.MODEL.DINAT.DILATIONS = [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]
    cfg.MODEL.DINAT.MLP_RATIO = 3.0
    cfg.MODEL.DINAT.QKV_BIAS = True
    cfg.MODEL.DINAT.QK_SCALE = None
    cfg.MODEL.DINAT.DROP_RATE = 0.0
    cfg.MODEL.DINAT.ATTN_DROP_RATE = 0.0
    cfg.MODEL.DINAT.DROP_PATH_RATE = 0.2
    cfg.MODEL.DINAT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Ours.
    # Layer scale init value (DiNAT-Base uses 1e-5); None disables it.
    cfg.MODEL.DINAT.LAYER_SCALE = None
    # Neighborhood-attention kernel: "auto", "torch", "flex" or "natten"
    # (see mask2former_dinat/layers/neighborhood_attention.py for what "auto" picks).
    cfg.MODEL.DINAT.NA_BACKEND = "auto"
    # Recompute each block's activations in backward (saves memory in training).
    cfg.MODEL.DINAT.USE_CHECKPOINT = False
    # Freeze the tokenizer (0) and the first N stages (1..4); -1 trains everything.
    cfg.MODEL.DINAT.FROZEN_STAGES = -1


def _add_input_config(cfg):
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter (coco_*_lsj mappers).
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0


def _add_solver_config(cfg):
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1


def _add_mask_former_config(cfg):
    """MODEL.MASK_FORMER: transformer decoder, losses and inference."""
    mf = cfg.MODEL.MASK_FORMER = CN()
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.CLASS_WEIGHT = 1.0
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.DEC_LAYERS = 6
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.ENFORCE_INPUT_PROJ = False
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # Pad images to a multiple of this (< 0: the backbone's size_divisibility).
    mf.SIZE_DIVISIBILITY = 32
    # Point-sampled mask losses.
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75

    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.INSTANCE_ON = False
    mf.TEST.PANOPTIC_ON = False
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False


def _add_pixel_decoder_config(cfg):
    """MODEL.SEM_SEG_HEAD additions: pixel decoder choice and its deformable encoder."""
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8


def _add_swin_config(cfg):
    """MODEL.SWIN: kept because Mask2Former's config function defines it and published
    configs carry it; this project has no Swin backbone."""
    sw = cfg.MODEL.SWIN = CN()
    sw.PRETRAIN_IMG_SIZE = 224
    sw.PATCH_SIZE = 4
    sw.EMBED_DIM = 96
    sw.DEPTHS = [2, 2, 6, 2]
    sw.NUM_HEADS = [3, 6, 12, 24]
    sw.WINDOW_SIZE = 7
    sw.MLP_RATIO = 4.0
    sw.QKV_BIAS = True
    sw.QK_SCALE = None
    sw.DROP_RATE = 0.0
    sw.ATTN_DROP_RATE = 0.0
    sw.DROP_PATH_RATE = 0.3
    sw.APE = False
    sw.PATCH_NORM = True
    sw.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    sw.USE_CHECKPOINT = False


def add_maskformer2_config(cfg):
    """Every key Mask2Former adds on top of detectron2 (+ DeepLab)."""
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_mask_former_config(cfg)
    _add_pixel_decoder_config(cfg)
    _add_swin_config(cfg)


def get_cfg():
    """detectron2's defaults + DeepLab + Mask2Former + DiNAT: what published configs merge over."""
    cfg = get_detectron2_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_dinat_config(cfg)
    return cfg
