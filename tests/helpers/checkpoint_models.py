"""A tiny model with DiNAT-like key names and small helpers for the checkpoint tests."""
import os

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, heads: int, kernel: int, dim: int = 4):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rpb = nn.Parameter(torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1))


class Block(nn.Module):
    def __init__(self, heads: int, kernel: int):
        super().__init__()
        self.attn = Attention(heads, kernel)


class Level(nn.Module):
    def __init__(self, depth: int, kernel: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(2, kernel) for _ in range(depth))


class Backbone(nn.Module):
    def __init__(self, depth: int, kernel: int):
        super().__init__()
        self.levels = nn.ModuleList([Level(depth, kernel)])


class Predictor(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.class_embed = nn.Linear(4, num_classes + 1)


class Head(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.predictor = Predictor(num_classes)


class TinyModel(nn.Module):
    """backbone.levels.0.blocks.{i}.attn.{qkv,rpb} and sem_seg_head.predictor.class_embed, like the real model."""

    def __init__(self, depth: int = 4, kernel: int = 3, num_classes: int = 3):
        super().__init__()
        self.backbone = Backbone(depth, kernel)
        self.sem_seg_head = Head(num_classes)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1), persistent=False)

    def forward(self, x):
        return self.sem_seg_head.predictor.class_embed(self.backbone.levels[0].blocks[0].attn.qkv(x)[:, :4])


def assert_same_weights(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)



def checkpoint_bytes(tmp_path, obj) -> bytes:
    path = tmp_path / "tmp_ckpt.pth"
    torch.save(obj, path)
    return path.read_bytes()


def temp_files(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".tmp")]
