"""What ``engine.compile: true`` (torch.compile of the trained networks) costs and buys; prints
one JSON line.

Trains configs/diffusion/tiny.yaml (EDM2 U-Net, 32x32 RGB) through the engine's own step
(``vidgen.train.engine.Trainer.train_step``) on a fixed random batch, once eagerly and once
compiled, each in its own process with the same seed and thread count, alternating
when there are several rounds. Reported per mode: the first step (for the compiled network it includes compilation)
and the median of the following ``--steps`` steps after ``--warmup`` more; ``step_ratio`` is
compiled / eager (lower is faster). Timings on a shared machine: compare within one run.

    python tools/bench_compile.py [--steps 10] [--warmup 3] [--batch 32] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(compile_: bool, steps: int, warmup: int, batch: int, threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from vidgen.config import load_config
    from vidgen.diffusion.recipe import DiffusionConfig, DiffusionRecipe
    from vidgen.train.dist import DistInfo
    from vidgen.train.engine import Trainer

    torch.set_num_threads(threads)
    cfg = load_config(DiffusionConfig, ROOT / "configs/diffusion/tiny.yaml",
                      [f"engine.batch={batch}", "engine.device=cpu", f"engine.compile={str(compile_).lower()}"])
    tr = Trainer(DiffusionRecipe, cfg, DistInfo(device=torch.device("cpu")))
    g = torch.Generator().manual_seed(1)
    data = {"x": (torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1), "label": torch.zeros(batch, dtype=torch.long)}
    times = []
    for _ in range(1 + warmup + steps):
        t0 = time.perf_counter()
        stats = tr.train_step(data, None)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first_s": times[0], "times": times[1 + warmup:], "stats": stats}))


def _in_child(compile_: bool, args) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); import bench_compile; "
            f"bench_compile._child({compile_}, {args.steps}, {args.warmup}, {args.batch}, {args.threads})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="processes per mode (eager and compiled alternate)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's default)")
    args = ap.parse_args(argv)
    if args.threads <= 0:
        import torch
        args.threads = torch.get_num_threads()
    runs = {"eager": [], "compiled": []}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for mode in runs:
            runs[mode].append(_in_child(mode == "compiled", args))
    out = {"bench": "compile", "model": "configs/diffusion/tiny.yaml", "batch": args.batch, "threads": args.threads,
           "load_avg": round(load, 2)}
    for mode, rs in runs.items():
        out[f"{mode}_first_step_s"] = round(statistics.median(r["first_s"] for r in rs), 2)
        out[f"{mode}_step_s"] = round(statistics.median(t for r in rs for t in r["times"]), 4)
    out["step_ratio"] = round(out["compiled_step_s"] / out["eager_step_s"], 3)
    out["compile_overhead_s"] = round(out["compiled_first_step_s"] - out["eager_first_step_s"], 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
