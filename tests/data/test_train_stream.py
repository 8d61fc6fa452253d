"""TrainStream: batches are a function of (seed, position), so a stream restored from a state
continues exactly, whatever the number of workers."""
import random

import numpy as np
import pytest
import torch

from mask2former_dinat.data.train_stream import TrainStream


class RandomAugmentation:
    """A mapper that draws from all three global RNGs, as detectron2's augmentations and ours do;
    drops image 5 (returns None), as a mapper may."""

    def __call__(self, d):
        if d["image_id"] == 5:
            return None
        draw = (float(torch.rand(1)), float(np.random.rand()), random.random())
        return {"image_id": d["image_id"], "width": d["width"], "height": d["height"], "draw": draw}


def _dicts(n=9):
    # Landscape and portrait images: batches are grouped by orientation, so samples wait across batches.
    return [{"image_id": i, "width": 64 if i % 3 else 48, "height": 48 if i % 3 else 64} for i in range(n)]


def _stream(**kw):
    return TrainStream(_dicts(), RandomAugmentation(), batch_size=2, seed=11, **kw)


def _take(stream, n):
    it = iter(stream)
    return [[(d["image_id"], d["draw"]) for d in next(it)] for _ in range(n)]


def test_a_stream_restored_from_its_state_continues_with_the_same_batches():
    reference = _take(_stream(), 12)
    first = _stream()
    assert _take(first, 5) == reference[:5]
    state = first.state_dict()
    assert state["pending"], "a sample should be waiting in a group at this point of the test"
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # a new process's RNGs differ
    resumed = _stream()
    resumed.load_state_dict(state)
    assert _take(resumed, 7) == reference[5:]


def test_batches_do_not_depend_on_the_number_of_workers():
    assert _take(_stream(num_workers=2), 8) == _take(_stream(), 8)


def test_each_pass_over_the_data_is_a_new_permutation_and_groups_hold_one_orientation():
    stream = TrainStream(_dicts(), lambda d: d, batch_size=3, seed=0, aspect_ratio_grouping=False)
    ids = [d["image_id"] for batch in _take_dicts(stream, 6) for d in batch]
    passes = [ids[i:i + 9] for i in range(0, 18, 9)]
    assert all(sorted(p) == list(range(9)) for p in passes) and passes[0] != passes[1]
    for batch in _take_dicts(_stream(), 10):
        assert len({d["width"] > d["height"] for d in batch}) == 1
        assert all(d["image_id"] != 5 for d in batch)  # dropped by the mapper


def _take_dicts(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_ranks_read_disjoint_positions():
    ranks = [TrainStream(_dicts(), lambda d: d, batch_size=1, seed=4, aspect_ratio_grouping=False, rank=r, world_size=3)
             for r in range(3)]
    ids = [[b[0]["image_id"] for b in _take_dicts(s, 3)] for s in ranks]
    assert sorted(i for r in ids for i in r) == list(range(9))


def test_empty_training_set_is_refused():
    with pytest.raises(ValueError, match="DATASETS.TRAIN"):
        TrainStream([], lambda d: d, batch_size=2, seed=0)
