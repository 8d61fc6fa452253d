#!/usr/bin/env python3
"""Write ADE20K semantic labels for detectron2.

Reads ADEChallengeData2016/annotations/{training,validation}/*.png (0 = other, 1..150) and writes
ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png (label - 1, 0 -> 255 =
ignore): the labels of ``ade20k_sem_seg_*`` and the semantic labels of ``ade20k_panoptic_*``.
Prints the number of files written per split.
"""
from mask2former_dinat.data.prepare.ade20k_sem_seg import convert_ade20k_sem_seg
from mask2former_dinat.data.prepare.command_line import run_ade20k

if __name__ == "__main__":
    run_ade20k(__doc__, convert_ade20k_sem_seg, ["images/{dirname}", "annotations/{dirname}"])
