#!/usr/bin/env python3
"""Write ADE20K instance annotations (COCO instance format, RLE masks).

Reads ADEChallengeData2016/images/<split>/*.jpg and annotations_instance/<split>/*.png
(R = instance class 1..100, G = instance index) and writes
ADEChallengeData2016/ade20k_instance_{train,val}.json over the 100 thing classes; category
ids are the 0-based ADE20K-150 ids of the things. Prints the instances per split.
"""
from mask2former_dinat.data.prepare.ade20k_instance import convert_ade20k_instances
from mask2former_dinat.data.prepare.command_line import run_ade20k

if __name__ == "__main__":
    run_ade20k(__doc__, convert_ade20k_instances, ["images/{dirname}", "annotations_instance/{dirname}"])
