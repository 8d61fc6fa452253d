"""train_net.py with a loss log and a self-inflicted SIGKILL, for the fault tests.

    python tests/helpers/train_with_faults.py LOSSES [--kill-after-step N] [--kill-in-save K] -- <train_net.py args>

Runs train_net.py's main() in this process, after two changes:
- a hook appends each iteration's losses to LOSSES (one JSON line, flushed and fsynced, so
  a killed run keeps what it logged);
- `--kill-after-step N`: the process SIGKILLs itself after iteration N (and its hooks: a
  checkpoint due at N is written first); `--kill-in-save K`: during its K-th checkpoint save
  (counting from 1), after half of the file's bytes are written.
"""
import argparse
import io
import json
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("losses")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--kill-in-save", type=int)
    ours = parser.parse_args(argv[:split])

    import torch
    from detectron2.engine import HookBase, default_argument_parser

    import train_net
    from mask2former_dinat.engine import Trainer

    class LogLosses(HookBase):
        def after_step(self):
            it = self.trainer.iter
            latest = self.trainer.storage.latest()
            losses = {k: v for k, (v, i) in latest.items() if i == it and (k.startswith("loss") or k == "total_loss")}
            with open(ours.losses, "a") as f:
                f.write(json.dumps({"iteration": it, "losses": losses}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if it == ours.kill_after_step:
                _kill()

    build_hooks = Trainer.build_hooks
    Trainer.build_hooks = lambda self: [*build_hooks(self), LogLosses()]

    if ours.kill_in_save is not None:
        real_save, saves = torch.save, [0]

        def save_then_die(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)):  # checkpoints are written to an open temporary file
                return real_save(obj, f, *args, **kwargs)
            saves[0] += 1
            if saves[0] < ours.kill_in_save:
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _kill()

        torch.save = save_then_die

    args = train_net._add_arguments(default_argument_parser()).parse_args(argv[split + 1 :])
    train_net.main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
