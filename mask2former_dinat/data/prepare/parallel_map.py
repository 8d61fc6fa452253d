"""Running a conversion over many files, in worker processes when that helps."""
import multiprocessing as mp
import os

__all__ = ["default_workers", "parallel_map"]


def default_workers():
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn, items, workers=None):
    """``[fn(x) for x in items]`` in input order, over ``workers`` processes (1: in this process).
    ``fn`` must be a module-level function (it is pickled)."""
    items = list(items)
    workers = default_workers() if workers is None else int(workers)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with mp.Pool(min(workers, len(items))) as pool:
        return pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers)))
