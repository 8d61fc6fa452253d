"""Start one training/evaluation process per device, on GPUs or on CPU.

Needed by detectron2 release 0.6 only: its `launch` asserts CUDA and always joins processes
with NCCL. There, without CUDA, this launcher starts the processes itself and joins them with
gloo, then sets up detectron2's per-machine ("local") process group the way detectron2's launch
does, so `detectron2.utils.comm` (ranks, gathers, barriers) works the same on CPU. With CUDA, or
on later upstream detectron2 (whose launch runs on CPU with gloo), detectron2's launch runs.

On CPU, with either detectron2, two things keep a finished multi-process run from being reported
as failed: dist_url="auto" rendezvouses through a temporary file instead of a TCP store hosted by
rank 0, and each worker ends with `os._exit(0)` after a final barrier. Tearing gloo down, explicitly
or in the interpreter's exit, now and then aborts a process on current torch ("terminate called
without an active exception"; seen on upstream detectron2's launch too).
"""
import contextlib
import logging
import os
import sys
import tempfile
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as _detectron2_launch
from detectron2.utils import comm

from . import detectron2_release

__all__ = ["DEFAULT_TIMEOUT", "launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func,
    num_processes_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Call `main_func(*args)` in `num_processes_per_machine` processes on each machine.

    With CUDA this is detectron2's launch. Without CUDA the processes run on CPU and communicate
    with gloo (started by detectron2's launch after 0.6, by this module on 0.6). `dist_url` is the
    rendezvous address ("tcp://host:port"); on CPU, "auto" rendezvouses through a temporary file
    (single machine only). One process in total runs `main_func` in this process, without a
    process group.
    """
    if num_processes_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"Need at least one process per machine and one machine, got "
            f"{num_processes_per_machine} processes per machine and {num_machines} machines."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"machine_rank must be in [0, {num_machines}), got {machine_rank}.")
    on_cpu = not torch.cuda.is_available()
    if on_cpu and num_machines * num_processes_per_machine == 1:
        main_func(*args)
        return
    with contextlib.ExitStack() as cleanup:
        if on_cpu:
            if not dist_url:
                raise ValueError("A multi-process run needs dist_url, e.g. 'tcp://127.0.0.1:50152' or 'auto'.")
            if dist_url == "auto":
                if num_machines != 1:
                    raise ValueError("dist_url='auto' only works on one machine; pass tcp://<host of rank 0>:<port>.")
                store_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="m2f_dinat_dist_"))
                dist_url = f"file://{os.path.join(store_dir, 'store')}"
            if detectron2_release.is_release_0_6():
                world_size = num_machines * num_processes_per_machine
                mp.start_processes(
                    _cpu_worker,
                    nprocs=num_processes_per_machine,
                    args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
                    daemon=False,
                    start_method="spawn",
                )
                return
            main_func = _ExitAfterSuccess(main_func)
        return _detectron2_launch(
            main_func,
            num_processes_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=timeout,
        )


class _ExitAfterSuccess:
    """`main_func` for a CPU worker of detectron2's launch: run it, then end the process as
    `_cpu_worker` does (barrier, flush, `os._exit(0)`), skipping gloo's teardown."""

    def __init__(self, main_func):
        self.main_func = main_func

    def __call__(self, *args):
        self.main_func(*args)
        comm.synchronize()
        _exit_cleanly()


def _exit_cleanly():
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error("Could not join the process group at %s", dist_url)
        raise
    try:
        # Every process must create every group, in the same order.
        if comm._LOCAL_PROCESS_GROUP is not None:
            raise RuntimeError("detectron2's local process group is already set in a fresh worker.")
        for i in range(world_size // num_per_machine):
            group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
            if i == machine_rank:
                comm._LOCAL_PROCESS_GROUP = group
        comm.synchronize()
        main_func(*args)
        comm.synchronize()
    except BaseException:
        dist.destroy_process_group()
        raise
    _exit_cleanly()  # success: skip gloo's teardown (module docstring)
