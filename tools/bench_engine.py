"""Overhead of the training engine over a bare training loop of the same model.

Runs the toy GAN (G, D and lazy R1 phases, EMA of G) at a size where one step takes a good
fraction of a second on a CPU, one step at a time alternately (ABBA order) through the engine's loop
(``vidgen.train.engine.Run.step``: data loader, phases, non-finite guards, learning-rate
schedule, EMA, stats ticks, progress bar) and through a hand-written loop that does only
the forward / backward / Adam work of the same three phases on a fixed batch. The reported
overhead is the median over steps of (engine step time / bare step time at the same step
index) - 1; the ratios of the medians and of the totals are printed beside it. Prints one JSON line; the bar is ``overhead <= 0.05``.

    python tools/bench_engine.py [--device cpu|cuda] [--steps 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from vidgen.config import load_config
from vidgen.train.dist import DistInfo, pick_device
from vidgen.train.engine import Run, build_optimizer
from vidgen.train.toy import ToyGANConfig, ToyGANRecipe


def make_cfg(args, out: str) -> ToyGANConfig:
    return load_config(ToyGANConfig, None, [
        f"engine.steps={10 ** 9}", f"engine.batch={args.batch}", "engine.workers=0",
        f"engine.device={args.device}", "engine.log_every=16", "engine.checkpoint_every=1000000",
        f"engine.out_dir={out}", f"data.resolution={args.res}", f"model.channels={args.channels}",
        "model.z_dim=128", "data.num=512", "model.r1_interval=4", f"engine.precision={args.precision}"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Bare:
    """The same phases by hand on one fixed batch: forward, backward, Adam; nothing else."""

    def __init__(self, cfg: ToyGANConfig, device: torch.device, precision: str):
        torch.manual_seed(0)
        self.recipe = ToyGANRecipe(cfg, device)
        self.nets = self.recipe.networks()
        self.opts = {k: build_optimizer(s, self.nets, k) for k, s in self.recipe.optimizers().items()}
        ds = self.recipe.dataset()
        self.batch = torch.stack([ds[i] for i in range(cfg.engine.batch)]).to(device)
        self.bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
        self.device, self.phases, self.n = device, self.recipe.phases(), 0

    def step(self) -> None:
        for ph in self.phases:
            if self.n % ph.interval:
                continue
            for k, net in self.nets.items():
                net.requires_grad_(k in ph.trainable)
            self.opts[ph.optimizer].zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss, _ = ph.loss(self.batch, self.n)
            (loss * ph.interval).backward()
            self.opts[ph.optimizer].step()
        self.n += 1


def timed_block(step, n: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=64, help="timed steps of each loop, interleaved")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--res", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default; 1 is steadiest on a shared machine)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    logging.disable(logging.WARNING)
    info = DistInfo(device=pick_device(args.device))
    with tempfile.TemporaryDirectory() as out:
        cfg = make_cfg(args, out)
        run, bare = Run(ToyGANRecipe, cfg, None, info), Bare(cfg, info.device, args.precision)
        for _ in range(4):  # warm-up: allocator, first R1 step
            timed_block(run.step, 1, info.device), timed_block(bare.step, 1, info.device)
        eng, ref = [], []
        for i in range(args.steps):  # step by step, ABBA order: drifts in machine load cancel
            first, second = (run.step, bare.step) if i % 2 == 0 else (bare.step, run.step)
            t1, t2 = timed_block(first, 1, info.device), timed_block(second, 1, info.device)
            eng.append(t1 if i % 2 == 0 else t2)
            ref.append(t2 if i % 2 == 0 else t1)
        run.close()
    ratios = [e / b for e, b in zip(eng, ref)]  # same step index: the same phases ran in both
    e, b, r = statistics.median(eng), statistics.median(ref), statistics.median(ratios)
    params = sum(p.numel() for n in ToyGANRecipe(make_cfg(args, "x"), torch.device("cpu")).networks().values()
                 for p in n.parameters())
    print(json.dumps({
        "bench": "engine_overhead", "device": args.device, "threads": torch.get_num_threads(),
        "model": f"toygan {args.res}x{args.res} ch{args.channels} batch{args.batch}", "params": params,
        "engine_s_per_step": round(e, 5), "bare_s_per_step": round(b, 5),
        "steps": args.steps, "overhead": round(r - 1, 4), "overhead_of_medians": round(e / b - 1, 4),
        "overhead_of_totals": round(sum(eng) / sum(ref) - 1, 4), "bar": 0.05, "pass": r - 1 <= 0.05}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
