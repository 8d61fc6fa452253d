"""`TrainStream`: the training batches as a pure function of (seed, stream position), so that a
resumed run continues them exactly.

detectron2's TrainingSampler is an infinite iterator whose position lives inside a generator,
and its mapper draws augmentations from the process-global RNGs: neither can be saved. Here:
- each process reads its own stream of positions 0, 1, 2, ...; local position j of rank r of W is
  global position g = j * W + r, and g holds image `perm(seed, g // N)[g % N]` of the N dataset
  dicts (a fresh permutation per pass over the data, like TrainingSampler);
- the mapper runs with the RNGs (torch, numpy, random) seeded from (seed, g) and restored after,
  so a position's sample is the same whenever, in whichever worker, it is mapped;
- batches are grouped by aspect ratio (width > height) like detectron2's AspectRatioGroupedDataset;
  the positions waiting in the groups and the next position to read are the whole state
  (`state_dict()`, a few integers), which the Trainer keeps in its checkpoints.
With several processes, every rank resumes from rank 0's saved state: its positions continue,
but the samples waiting in its groups at the save may differ from rank 0's.
"""
import itertools
import logging
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["TrainStream", "build_train_stream", "derived_seed"]

_MIX = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads (seed, position) over the seed space


def derived_seed(seed: int, *values: int) -> int:
    """A 31-bit seed for (seed, values...), stable across processes and Python versions."""
    h = seed & 0xFFFFFFFFFFFFFFFF
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFFFFFF)) * _MIX + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h % (2**31 - 1)


class _SeededRNG:
    """Context: torch, numpy and random seeded with `seed`; their states are restored on exit."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        torch.default_generator.manual_seed(self.seed)  # CPU only: mappers run there, CUDA's state is left alone
        np.random.seed(self.seed)
        random.seed(self.seed)

    def __exit__(self, *exc):
        torch.set_rng_state(self._states[0])
        np.random.set_state(self._states[1])
        random.setstate(self._states[2])


class _Samples:
    """Global position -> mapped sample (None where the mapper drops it)."""

    def __init__(self, dataset_dicts: Sequence[dict], mapper: Callable, seed: int, shuffle: bool):
        if not dataset_dicts:
            raise ValueError("The training datasets (DATASETS.TRAIN) hold no images.")
        self.dicts, self.mapper, self.seed, self.shuffle = dataset_dicts, mapper, seed, shuffle
        self._perm: Tuple[int, Optional[List[int]]] = (-1, None)

    def index(self, position: int) -> int:
        n = len(self.dicts)
        if not self.shuffle:
            return position % n
        epoch = position // n
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(derived_seed(self.seed, 1, epoch))
            self._perm = (epoch, torch.randperm(n, generator=g).tolist())
        return self._perm[1][position % n]

    def __call__(self, position: int):
        with _SeededRNG(derived_seed(self.seed, 2, position)):
            return self.mapper(self.dicts[self.index(position)])


class _PositionRange(torch.utils.data.IterableDataset):
    """(local position, sample) from local position `start` on; data loader workers share it out."""

    def __init__(self, samples: _Samples, start: int, rank: int, world: int):
        self.samples, self.start, self.rank, self.world = samples, start, rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for j in itertools.count(self.start + worker, workers):
            yield j, self.samples(j * self.world + self.rank)


def _first(batch):
    return batch


class TrainStream:
    """An iterable of training batches (lists of `batch_size` mapped dicts) with `state_dict()`.

    Args:
        dataset_dicts: the training dataset dicts (detectron2's list[dict]).
        mapper: dataset dict -> model input dict (or None to drop the sample).
        batch_size: images per batch in this process.
        seed: the stream's seed (the same in every process).
        aspect_ratio_grouping: batch images of the same orientation together, as detectron2 does.
        num_workers: data loader worker processes (0: map in this process).
        rank, world_size: this process among the training processes.
    """

    def __init__(
        self,
        dataset_dicts: Sequence[dict],
        mapper: Callable,
        *,
        batch_size: int,
        seed: int,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        self.samples = _Samples(dataset_dicts, mapper, seed, shuffle)
        self.batch_size, self.grouping, self.num_workers = batch_size, aspect_ratio_grouping, num_workers
        self.rank, self.world_size = rank, world_size
        self._next = 0  # the next local position to read
        self._pending: List[int] = []  # local positions read but not yet in a batch

    @property
    def seed(self) -> int:
        return self.samples.seed

    def state_dict(self) -> Dict[str, Any]:
        """{"seed", "next_position", "pending"}: where the stream is after the last batch it gave."""
        return {"seed": self.seed, "next_position": self._next, "pending": list(self._pending)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue after the batch at which `state` was taken (before iterating)."""
        self.samples.seed = int(state["seed"])
        self.samples._perm = (-1, None)
        self._next = int(state["next_position"])
        self._pending = [int(p) for p in state["pending"]]

    def _global(self, j: int) -> int:
        return j * self.world_size + self.rank

    def _read(self, start: int) -> Iterator[Tuple[int, Any]]:
        source = _PositionRange(self.samples, start, self.rank, self.world_size)
        if self.num_workers == 0:
            return iter(source)
        loader = torch.utils.data.DataLoader(
            source, batch_size=None, num_workers=self.num_workers, collate_fn=_first, persistent_workers=False
        )
        return iter(loader)

    def _group(self, sample) -> int:
        if not self.grouping:
            return 0
        if "width" in sample and "height" in sample:
            w, h = sample["width"], sample["height"]
        else:
            h, w = sample["image"].shape[-2:]
        return int(w > h)

    def __iter__(self) -> Iterator[List[dict]]:
        groups: Dict[int, List[Tuple[int, dict]]] = {0: [], 1: []}
        for j in self._pending:  # the samples that waited in the groups when the state was saved
            sample = self.samples(self._global(j))
            if sample is not None:
                groups[self._group(sample)].append((j, sample))
        for j, sample in self._read(self._next):
            self._next = j + 1
            if sample is None:
                continue
            group = groups[self._group(sample)]
            group.append((j, sample))
            batch = None
            if len(group) == self.batch_size:
                batch = [s for _, s in group]
                group.clear()
            self._pending = sorted(p for g in groups.values() for p, _ in g)
            if batch is not None:
                yield batch


def build_train_stream(cfg, mapper: Optional[Callable] = None):
    """The TrainStream of cfg.DATASETS.TRAIN with the configured mapper, for this process.

    Serves DATALOADER.SAMPLER_TRAIN "TrainingSampler" (what every config here uses); another
    sampler gets detectron2's loader, whose data order restarts on resume (logged).
    """
    from detectron2.data import get_detection_dataset_dicts
    from detectron2.utils import comm

    from .dataset_mappers import build_train_loader, build_train_mapper

    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        logging.getLogger(__name__).warning(
            "DATALOADER.SAMPLER_TRAIN %s: using detectron2's loader; a resumed run restarts its data order.",
            cfg.DATALOADER.SAMPLER_TRAIN,
        )
        return build_train_loader(cfg)
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({cfg.SOLVER.IMS_PER_BATCH}) must be divisible by the number of processes ({world})."
        )
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    return TrainStream(
        dicts,
        mapper if mapper is not None else build_train_mapper(cfg),
        batch_size=cfg.SOLVER.IMS_PER_BATCH // world,
        seed=seed,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        rank=comm.get_rank(),
        world_size=world,
    )
