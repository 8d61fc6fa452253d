#!/usr/bin/env python
"""Benchmark neighborhood attention backends on DiNAT-L's attention shapes.

DiNAT-L at a 1024x1024 input (published Mask2Former configs): kernel 11, head_dim 32,
stage 1: 256x256 map, 6 heads; stage 2: 128x128, 12; stage 3: 64x64, 24; stage 4: 32x32, 48;
each distinct dilation of MODEL.DINAT.DILATIONS is measured once per stage.

Per case and backend: median time, exact-NA rate (4*H*W*k*k*head_dim*heads FLOP per image
forward; forward+backward counted as 3x that), the rate as a fraction of this machine's fp32
matmul rate (measured in the same run), peak extra memory (CPU: resident-set growth sampled
every millisecond in a fresh subprocess per case; CUDA: torch.cuda.max_memory_allocated), and
the speed-up over the slow reference (tests/helpers/na_reference.py), timed on a small map and
extrapolated per query (its cost per query does not depend on the map or the dilation).

    python tools/benchmark_na.py                       # torch backend, forward, all stages
    python tools/benchmark_na.py --backward --stages 3
    python tools/benchmark_na.py --device cuda --backends torch,flex,natten --dtype float16

--flex-blocks SIZE (the model's padded input size: 1024 or HxW) runs no attention: it counts, from the flex
backend's own token orders and window (na_flex.block_counts), the share of the work a fused
flex_attention kernel schedules that is real neighbourhood attention, per stage and dilation,
for the order before tiling (128-token blocks, as it ran) and the backend's order now:

    python tools/benchmark_na.py --flex-blocks 1024
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from mask2former_dinat.layers import na2d, na_backend, na_flex

ROOT = Path(__file__).resolve().parents[1]

KERNEL_SIZE = 11
HEAD_DIM = 32
# stage: (map size at a 1024x1024 input, heads, dilations of its blocks)
STAGES = {
    1: (256, 6, [1, 14, 1]),
    2: (128, 12, [1, 4, 1, 7]),
    3: (64, 24, [1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 3]),
    4: (32, 48, [1, 1, 1, 1, 1]),
}
OLD_FLEX_BLOCK = 128  # the flex backend's block before tiling (create_block_mask's default)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def na_flop(size, heads, batch=1, backward=False):
    return 4 * size * size * KERNEL_SIZE ** 2 * HEAD_DIM * heads * batch * (3 if backward else 1)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, device, repeat):
    fn()  # warm-up (compilation, caches)
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(device, dtype):
    n = 4096 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n ** 3 / median_time(lambda: a @ b, device, 5)


def inputs(size, heads, dtype, device, batch, with_rpb, requires_grad):
    q, k, v = (torch.randn(batch, heads, size, size, HEAD_DIM, dtype=dtype, device=device,
                           requires_grad=requires_grad) for _ in range(3))
    rpb = None
    if with_rpb:
        rpb = (0.02 * torch.randn(heads, 2 * KERNEL_SIZE - 1, 2 * KERNEL_SIZE - 1, dtype=dtype, device=device))
        rpb.requires_grad_(requires_grad)
    return q, k, v, rpb


def step(q, k, v, rpb, dilation, backward):
    out = na2d(q, k, v, KERNEL_SIZE, dilation, rpb)
    if backward:
        out.backward(torch.ones_like(out))


class RssPeak:
    """Peak resident-set growth (bytes) of this process while active, sampled every millisecond."""

    def __enter__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.extra = self.peak - self.start


def run_case(case):
    """Time one (stage, dilation, backend) case in this process; returns a result dict."""
    device, dtype = torch.device(case["device"]), DTYPES[case["dtype"]]
    torch.set_num_threads(case["threads"])
    with_rpb = case["backend"] != "natten"
    q, k, v, rpb = inputs(case["size"], case["heads"], dtype, device, case["batch"], with_rpb, case["backward"])

    def fn():
        with na_backend(case["backend"]):
            step(q, k, v, rpb, case["dilation"], case["backward"])
        for t in (q, k, v, rpb):
            if t is not None:
                t.grad = None

    # memory first: on CPU the allocator keeps freed pages, so only a cold call shows the growth
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync(device)
        extra = torch.cuda.max_memory_allocated() - before
    else:
        with RssPeak() as peak:
            fn()
        extra = peak.extra
    seconds = median_time(fn, device, case["repeat"])
    return {"seconds": seconds, "extra_bytes": extra, "rpb": with_rpb}


def run_case_isolated(case):
    """CPU: a fresh process per case, so memory freed by earlier cases does not hide growth."""
    cmd = [sys.executable, __file__, "--case", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_seconds_per_query(device, dtype, backward, repeat):
    """Seconds per (query, head) of the slow reference, on a 2-head 32x32 map with k=11."""
    spec = importlib.util.spec_from_file_location("na_reference", ROOT / "tests" / "helpers" / "na_reference.py")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    size, heads = 32, 2
    q, k, v, rpb = inputs(size, heads, dtype, device, 1, True, backward)

    def fn():
        out = reference.na2d_reference(q, k, v, KERNEL_SIZE, 1, rpb)
        if backward:
            out.backward(torch.ones_like(out))

    return median_time(fn, device, repeat) / (size * size * heads)


def stage_maps(height, width):
    """Map size [stage] of DiNAT at a (padded) input of height x width: a stride-4 patch
    embedding (two stride-2 convs), then a stride-2 conv before each later stage; each conv
    rounds up."""
    def half(n):
        return -(-n // 2)

    maps, h, w = {}, half(half(height)), half(half(width))
    for stage in STAGES:
        maps[stage] = (h, w)
        h, w = half(h), half(w)
    return maps


def flex_block_rows(height, width, stages=tuple(STAGES)):
    """Per stage and distinct dilation: the flex block masks' useful and scheduled work."""
    rows = []
    for stage in stages:
        _, heads, dilations = STAGES[stage]
        map_h, map_w = stage_maps(height, width)[stage]
        for dilation in sorted(set(dilations)):
            # NeighborhoodAttention2D pads maps smaller than k * d up to it before na2d
            h, w = max(map_h, KERNEL_SIZE * dilation), max(map_w, KERNEL_SIZE * dilation)
            row = {"stage": stage, "map": (h, w), "dilation": dilation, "layers": dilations.count(dilation),
                   "heads": heads}
            orders = {"old": (na_flex.TokenOrder(h, w, KERNEL_SIZE, dilation), OLD_FLEX_BLOCK),
                      "new128": (na_flex.token_order(h, w, KERNEL_SIZE, dilation, OLD_FLEX_BLOCK), OLD_FLEX_BLOCK),
                      "new": (na_flex.token_order(h, w, KERNEL_SIZE, dilation), na_flex.BLOCK_SIZE)}
            for name, (order, block) in orders.items():
                useful, scheduled = na_flex.block_counts(order, block)
                row[name] = {"order": order.label, "block": block, "useful": useful, "scheduled": scheduled,
                             "share": useful / scheduled}
            rows.append(row)
    return rows


def print_flex_blocks(size, stages):
    height, width = (int(s) for s in size.lower().split("x")) if "x" in size.lower() else (int(size),) * 2
    start = time.perf_counter()
    rows = flex_block_rows(height, width, stages)
    print(f"# flex_attention block masks of DiNAT-L (kernel {KERNEL_SIZE}) at a {height}x{width} input: "
          "useful share = real neighbour pairs / (non-empty (q block, kv block) pairs x block^2)")
    print(f"# old: dilation groups, row-major, {OLD_FLEX_BLOCK}-token blocks (the order before tiling, its padding "
          "counted as attending nothing); new: the backend's "
          f"order now, {na_flex.BLOCK_SIZE}-token blocks (BLOCK_SIZE); new@{OLD_FLEX_BLOCK}: its order "
          f"chosen for {OLD_FLEX_BLOCK}-token blocks")
    header = (f"{'stage':>5} {'map':>9} {'dil':>3} {'layers':>6} {'old':>6} {'new@' + str(OLD_FLEX_BLOCK):>8} "
              f"{'':18} {'new':>6}  new order")
    print(header)
    print("-" * (len(header) + 10))
    for stage in stages:
        mine = [row for row in rows if row["stage"] == stage]
        for row in mine:
            print(f"{stage:>5} {'{}x{}'.format(*row['map']):>9} {row['dilation']:>3} {row['layers']:>6} "
                  f"{100 * row['old']['share']:5.1f}% {100 * row['new128']['share']:7.1f}% "
                  f"{'(' + row['new128']['order'] + ')':18} {100 * row['new']['share']:5.1f}%  {row['new']['order']}")
        total = {name: sum(r["layers"] * r[name]["useful"] for r in mine) /
                 sum(r["layers"] * r[name]["scheduled"] for r in mine) for name in ("old", "new128", "new")}
        print(f"{stage:>5} {'all':>9} {'':>3} {sum(r['layers'] for r in mine):>6} {100 * total['old']:5.1f}% "
              f"{100 * total['new128']:7.1f}% {'':18} {100 * total['new']:5.1f}%  (stage, layers weighted)")
    print(f"# counted in {time.perf_counter() - start:.1f} s on {torch.get_num_threads()} CPU threads")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="1,2,3,4", help="comma-separated DiNAT stages (1-4)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated of torch,flex,natten (default: torch on CPU, all three on CUDA; "
                             "flex/natten are unfused on CPU and need GBs there)")
    parser.add_argument("--backward", action="store_true", help="time forward+backward instead of forward")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--flex-blocks", metavar="SIZE",
                        help="no timing: print the useful share of the flex block masks' scheduled work per "
                             "stage/dilation at this input size (1024 or HxW), old vs new token order")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.flex_blocks:
        torch.set_num_threads(args.threads)
        print_flex_blocks(args.flex_blocks, [int(s) for s in args.stages.split(",")])
        return

    if args.case:  # child process of run_case_isolated
        print(json.dumps(run_case(json.loads(args.case))))
        return

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.set_num_threads(args.threads)
    backends = (args.backends or ("torch,flex,natten" if device.type == "cuda" else "torch")).split(",")
    stages = [int(s) for s in args.stages.split(",")]
    roof = matmul_rate(device, dtype)
    ref_per_query = reference_seconds_per_query(device, dtype, args.backward, max(5, args.repeat))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} threads"
    print(f"# device: {device_name}; dtype {args.dtype}; batch {args.batch}; "
          f"{'forward+backward' if args.backward else 'forward'}; kernel {KERNEL_SIZE}, head_dim {HEAD_DIM}")
    print(f"# {args.dtype} matmul rate (roof): {roof / 1e9:.1f} GFLOP/s")
    print(f"# slow reference: {ref_per_query * 1e6:.1f} us per query-head "
          "(timed on a 2-head 32x32 map, extrapolated per query)")
    print("# natten runs without rpb (natten >= 0.20 has none); GFLOP/s counts exact-NA work only")
    header = f"{'stage':>5} {'map':>7} {'heads':>5} {'dil':>3} {'backend':>7} {'ms':>9} {'GFLOP/s':>8} " \
             f"{'%roof':>6} {'extra MB':>9} {'vs ref':>8}"
    print(header)
    print("-" * len(header))
    for stage in stages:
        size, heads, dilations = STAGES[stage]
        for dilation in sorted(set(dilations)):
            for backend in backends:
                case = {"size": size, "heads": heads, "dilation": dilation, "backend": backend,
                        "device": args.device, "dtype": args.dtype, "batch": args.batch, "backward": args.backward,
                        "repeat": args.repeat, "threads": args.threads}
                try:
                    result = run_case(case) if device.type == "cuda" else run_case_isolated(case)
                except Exception as exc:  # noqa: BLE001  (a backend that cannot run a case is reported, not fatal)
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                prefix = f"{stage:>5} {f'{size}x{size}':>7} {heads:>5} {dilation:>3} {backend:>7}"
                if "error" in result:
                    print(f"{prefix}  n/a: {result['error'][:120]}")
                    continue
                seconds = result["seconds"]
                rate = na_flop(size, heads, args.batch, args.backward) / seconds
                speedup = ref_per_query * size * size * heads * args.batch / seconds
                print(f"{prefix} {seconds * 1e3:9.1f} {rate / 1e9:8.1f} {100 * rate / roof:5.1f}% "
                      f"{result['extra_bytes'] / 2 ** 20:9.1f} {speedup:7.0f}x", flush=True)


if __name__ == "__main__":
    main()
