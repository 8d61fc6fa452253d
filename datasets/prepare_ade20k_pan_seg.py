#!/usr/bin/env python3
"""Write ADE20K panoptic annotations (COCO panoptic format).

Reads ADEChallengeData2016/images/<split>/*.jpg, annotations/<split>/*.png (semantic) and
annotations_instance/<split>/*.png (the scene-parsing instance annotations: R = instance class
1..100, G = instance index) and writes ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png
and ade20k_panoptic_{train,val}.json: stuff segments from the semantic labels, one thing segment
per instance; category ids are the 0-based ADE20K-150 ids. Prints the images per split.
"""
from mask2former_dinat.data.prepare.ade20k_panoptic import convert_ade20k_panoptic
from mask2former_dinat.data.prepare.command_line import run_ade20k

if __name__ == "__main__":
    run_ade20k(__doc__, convert_ade20k_panoptic, ["images/{dirname}", "annotations/{dirname}", "annotations_instance/{dirname}"])
