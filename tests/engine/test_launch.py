"""mask2former_dinat.engine.launch: several CPU processes joined with gloo, with detectron2's
comm (ranks, local group, gathers) working as under detectron2's own launch."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from mask2former_dinat.engine import launch

_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from detectron2.utils import comm
    from mask2former_dinat.engine import launch

    def main(out_dir):
        gathered = comm.all_gather({"rank": comm.get_rank()})
        total = torch.tensor([float(comm.get_rank() + 1)])
        dist.all_reduce(total)
        report = {
            "backend": dist.get_backend(),
            "rank": comm.get_rank(),
            "world": comm.get_world_size(),
            "local_rank": comm.get_local_rank(),
            "local_size": comm.get_local_size(),
            "gathered": [g["rank"] for g in gathered],
            "sum": total.item(),
        }
        with open(f"{out_dir}/rank{comm.get_rank()}.json", "w") as f:
            json.dump(report, f)

    if __name__ == "__main__":
        launch(main, int(sys.argv[2]), dist_url="auto", args=(sys.argv[1],))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, launch is detectron2's NCCL launch")
def test_two_cpu_processes_share_a_gloo_group_and_detectron2_comm(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "2"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, report in enumerate(reports):
        assert report == {
            "backend": "gloo",
            "rank": rank,
            "world": 2,
            "local_rank": rank,
            "local_size": 2,
            "gathered": [0, 1],
            "sum": 3.0,
        }


def test_one_process_runs_in_this_process_without_a_group():
    seen = []
    launch(lambda x: seen.append((x, torch.distributed.is_initialized())), 1, args=("here",))
    assert seen == [("here", False)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_processes_per_machine": 0}, "at least one process"),
        ({"num_processes_per_machine": 2, "num_machines": 2, "machine_rank": 2}, "machine_rank"),
        ({"num_processes_per_machine": 2, "num_machines": 2, "dist_url": "auto"}, "one machine"),
    ],
)
def test_bad_launch_arguments_are_rejected(kwargs, message):
    if torch.cuda.is_available() and "one machine" in message:
        pytest.skip("with CUDA, detectron2's own launch checks dist_url='auto' with an assert")
    with pytest.raises(ValueError, match=message):
        launch(print, **kwargs)
