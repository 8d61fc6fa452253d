"""Derive this folder's reference files from the full set the original code produced.

    python tests/reference/derive.py /path/to/full/reference

The full set (golden_panoptic_small.pth, na_golden.pt and the JSON files) is ~45 MB and
lives outside the repository; this writes the subset the tests use, losslessly where it
keeps a value (see README.md here for what is left out). Run it only to regenerate.
"""
import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SEM_SEG_STRIDE = 4  # class probabilities kept at every 4th pixel in each direction
COPIED = ["published_configs.json", "published_state_dict_manifest.json", "imagenet_dinat_large_manifest.json"]


def pack_masks(masks):
    """bool [N, H, W] -> {"packed": uint8 bit-packed along W, "shape": [N, H, W]} (lossless)."""
    return {"packed": torch.from_numpy(np.packbits(masks.numpy(), axis=-1)), "shape": list(masks.shape)}


def derive_golden(src, dst):
    golden = torch.load(src, weights_only=True)
    for output in golden["outputs"]:
        if "sem_seg_fp16" in output:
            output["sem_seg_fp16"] = output["sem_seg_fp16"][:, ::SEM_SEG_STRIDE, ::SEM_SEG_STRIDE].clone()
            output["sem_seg_fp16_stride"] = SEM_SEG_STRIDE
        if "instances" in output:
            output["instances"]["pred_masks"] = pack_masks(output["instances"]["pred_masks"])
        if "panoptic_seg" in output:
            assert int(output["panoptic_seg"].max()) < 2**15
            output["panoptic_seg"] = output["panoptic_seg"].to(torch.int16)
    torch.save(golden, dst)


def derive_na_golden(src, dst):
    """All cases; the logits of the bias-free case are left out (its outputs stay)."""
    golden = torch.load(src, weights_only=True)
    for case in golden["cases"]:
        if case["rpb"] is None:
            del case["logits"]
    torch.save(golden, dst)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full_reference", type=Path)
    args = parser.parse_args()
    for name in COPIED:
        shutil.copyfile(args.full_reference / name, HERE / name)
    derive_golden(args.full_reference / "golden_panoptic_small.pth", HERE / "golden_panoptic_small.pth")
    derive_na_golden(args.full_reference / "na_golden.pt", HERE / "na_golden.pt")
    for p in sorted(HERE.iterdir()):
        print(f"{p.stat().st_size / 1e6:8.3f} MB  {p.name}")


if __name__ == "__main__":
    main()
