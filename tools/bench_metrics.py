"""Benchmark of the evaluation pipeline; prints one JSON line.

1. throughput: generated frames/s through the full streaming path (generator -> batches ->
   detector -> float64 statistics) vs the detector's bare forward on ready-made batches, in
   the same process (bar: ratio >= 0.9);
2. memory: peak RSS of the same evaluation at 2k and 20k samples, each in a fresh process
   (bar: ratio <= 1.1), i.e. memory independent of the sample count.
Uses a small built-in random detector, so no weight files are needed.

    python tools/bench_metrics.py [--size 64] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _detector():
    from vidgen.metrics.detectors import RandomDetector

    return RandomDetector(feature_dim=256, grid=8, hidden=256, seed=0)  # ~4M multiply-adds per frame


def _fake(size: int):
    from vidgen.metrics.inputs import FakeVideos

    pool = np.random.default_rng(0).integers(0, 256, (8, 16, size, size, 3), dtype=np.uint8)
    return FakeVideos("callable", "bench", generate=lambda seed, n: pool[seed % len(pool), :n])


def run_eval(num: int, size: int, batch: int) -> float:
    """Seconds to stream `num` generated frames into statistics."""
    from vidgen.metrics.image import fake_frame_stats

    det, fake = _detector(), _fake(size)
    t = time.perf_counter()
    stats = fake_frame_stats(det, fake, num, 16, 0, 0, batch, progress=False)
    stats.mean_cov()
    assert stats.num_items == num
    return time.perf_counter() - t


def run_bare(num: int, size: int, batch: int) -> float:
    det = _detector()
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    t = time.perf_counter()
    for _ in range(num // batch):
        det(x)
    return time.perf_counter() - t


def child(num: int, size: int, batch: int) -> None:
    seconds = run_eval(num, size, batch)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--num", type=int, default=4096, help="frames for the throughput comparison")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)  # a fair, low-noise comparison on a shared machine
    if args.child:
        return child(args.child, args.size, args.batch)
    run_eval(args.batch * 4, args.size, args.batch)   # warm-up
    run_bare(args.batch * 4, args.size, args.batch)
    n = args.num // args.batch * args.batch
    bare = min(run_bare(n, args.size, args.batch) for _ in range(3))
    full = min(run_eval(n, args.size, args.batch) for _ in range(3))
    mem = {}
    for count in (2000, 20000):
        out = subprocess.run([sys.executable, __file__, "--child", str(count), "--size", str(args.size),
                              "--batch", str(args.batch)], capture_output=True, text=True, check=True)
        mem[count] = json.loads(out.stdout.strip().splitlines()[-1])
    ratio_tp = (n / full) / (n / bare)
    ratio_mem = mem[20000]["maxrss_kb"] / mem[2000]["maxrss_kb"]
    print(json.dumps({
        "bench": "metrics", "detector": "random256 (built-in)", "frame_size": args.size,
        "batch": args.batch, "eval_items_per_s": round(n / full, 1), "bare_items_per_s": round(n / bare, 1),
        "throughput_ratio": round(ratio_tp, 3), "throughput_bar": 0.9, "throughput_ok": ratio_tp >= 0.9,
        "peak_rss_mb_2k": round(mem[2000]["maxrss_kb"] / 1024, 1),
        "peak_rss_mb_20k": round(mem[20000]["maxrss_kb"] / 1024, 1),
        "memory_ratio": round(ratio_mem, 3), "memory_bar": 1.1, "memory_ok": ratio_mem <= 1.1}))


if __name__ == "__main__":
    main()
