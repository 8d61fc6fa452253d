"""ADE20K-150 categories: names, colors, which are things, and the 100 instance classes.

Facts of the ADE20K scene-parsing benchmark and its instance-segmentation track:
- the semantic annotations (``annotations/*.png``) hold 0 for "other" and 1..150 for the
  150 classes below; detectron2 uses them shifted by one (0..149, 255 = ignore);
- the instance annotations (``annotations_instance/*.png``) hold in their R channel an
  instance class 1..100 and in their G channel an instance index (0 = none); instance class
  ``k`` is the ``k``-th thing of the 150 classes in ascending order (see ADE20K_THING_IDS).

Contiguous ids in this project are the 0-based semantic ids (0..149) for every ADE20K task.
"""
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_COLORS",
    "ADE20K_THING_IDS",
    "ADE20K_INSTANCE_CLASSES",
    "ade20k_categories",
]

ADE20K_CLASSES = list(ADE20K_SEM_SEG_CATEGORIES)

# fmt: off
ADE20K_COLORS = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
    [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
    [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
    [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
    [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
    [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],
    [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
    [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
    [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
    [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
    [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
    [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
]

# 0-based semantic ids of the 100 thing classes; instance class k (1..100) is ADE20K_THING_IDS[k - 1]
# (the official "instance100 -> sceneparse150" category mapping, shifted to 0-based).
ADE20K_THING_IDS = [
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37,
    38, 39, 41, 42, 43, 44, 45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67,
    69, 70, 71, 72, 73, 74, 75, 76, 78, 80, 81, 82, 83, 85, 86, 87, 88, 89, 90, 92,
    93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112, 115, 116, 118, 119, 120, 121, 123, 124,
    125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137, 138, 139, 142, 143, 144, 146, 147, 148, 149,
]

# Names of the 100 instance classes as the instance-segmentation track spells them.
ADE20K_INSTANCE_CLASSES = [
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car",
    "painting", "sofa", "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "box", "column", "signboard", "chest of drawers",
    "counter", "sink", "fireplace", "refrigerator", "stairs", "case", "pool table", "pillow",
    "screen door", "bookcase", "coffee table", "toilet", "flower", "book", "bench", "countertop",
    "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "arcade machine", "bus",
    "towel", "light", "truck", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "apparel", "pole", "bannister", "ottoman", "bottle", "van",
    "ship", "fountain", "washer", "plaything", "stool", "barrel", "basket", "bag", "minibike",
    "oven", "ball", "food", "step", "trade name", "microwave", "pot", "animal", "bicycle",
    "dishwasher", "screen", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "plate", "monitor", "bulletin board", "radiator", "glass", "clock", "flag",
]
# fmt: on

assert len(ADE20K_CLASSES) == len(ADE20K_COLORS) == 150
assert len(ADE20K_THING_IDS) == len(ADE20K_INSTANCE_CLASSES) == 100
assert ADE20K_THING_IDS == sorted(set(ADE20K_THING_IDS))


def ade20k_categories():
    """The 150 panoptic categories: list of {"id" (0..149), "name", "color", "isthing"}."""
    things = set(ADE20K_THING_IDS)
    return [
        {"id": i, "name": name, "color": list(color), "isthing": int(i in things)}
        for i, (name, color) in enumerate(zip(ADE20K_CLASSES, ADE20K_COLORS))
    ]
