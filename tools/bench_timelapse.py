"""Benchmark of the time-lapse GAN on the embedded synthetic time-lapse (docs/METHODS.md 2).

Trains configs/timelapse/tiny.yaml through the shared engine for a fixed number of steps,
once per training seed (``engine.seed``; default 5 seeds, each in its own process, ``--jobs``
at a time), so the figures depend on the code, not on how busy the machine is, and a result
that one rounding path happens to reach does not pass for one that holds. A wall-clock cap
per run stops a very slow machine, and the JSON says so. Each run measures with its EMA
generator:
- day_light_corr: Pearson correlation between the mean brightness of a fixed-weather day
  sweep (time of day moving, trend and year held) and the sample's true daily light curve
  (its renderer with clouds and haze off), averaged over 4 weathers (z seeds).
- flicker_ratio: mean absolute frame-to-frame difference of a `stabilize` render over the
  sample's own capture times (one weather, noon), divided by that of the raw sample sequence.
- variance_ratios: shares of output variance due to z, noise, t, trend, year, day; and
  variance_ratios_sample, the same shares of the sample's own renderer (weather in place of
  z), i.e. what a generator that learnt the sample exactly would show.
Bars, over the training seeds: median day_light_corr >= 0.9, minimum >= 0.8, and every
flicker_ratio <= 0.3. ``--threads 1`` runs every process on one thread (another order of
floating-point sums, hence another rounding path). Prints one JSON line.

    python tools/bench_timelapse.py [--seeds 0,1,2,3,4] [--jobs 2] [--threads N] [--steps S]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidgen.config import load_config  # noqa: E402
from vidgen.data.synthetic import make_timelapse, timelapse_frame  # noqa: E402
from vidgen.render.writer import to_uint8_frames  # noqa: E402
from vidgen.train.dist import DistInfo  # noqa: E402
from vidgen.train.engine import Trainer, make_loader, to_device  # noqa: E402
from timelapse import rerender as rr  # noqa: E402
from timelapse.metrics import variance_ratios  # noqa: E402
from timelapse.recipe import TimelapseConfig, TimelapseRecipe  # noqa: E402


def true_light_curve(hours: np.ndarray, size: tuple[int, int], year: float) -> np.ndarray:
    """Mean brightness of the sample's renderer at each hour, weather off, mid-growth."""
    layout = {"horizon": 0.47, "house": (0.62, 0.2), "plant": 0.3}
    out = []
    for h in hours:
        img = timelapse_frame(size, 0.5, h / 24.0, year, 0.0, 0.0, np.random.default_rng(0), layout)
        out.append(float(np.asarray(img, dtype=np.float64).mean()))
    return np.array(out)


def sample_variance_ratios(size: tuple[int, int], factors: tuple[str, ...], n: int = 128,
                           seed: int = 0) -> dict[str, float]:
    """Variance shares of the sample's renderer, estimated like ``variance_ratios``: pairs of
    frames differing only in the weather (clouds, haze: the part z has to model) or in one
    factor, shares of ``{z, trend, year, day}`` averaged over pixels. Factors the sequence
    has no term for (a year under 365 days) are left out of the sum and reported as 0."""
    layout = {"horizon": 0.47, "house": (0.62, 0.2), "plant": 0.3}
    rng = np.random.default_rng(seed)

    def draw() -> dict:
        return {"trend": rng.random(), "day": rng.random(), "year": rng.random(), "cloud": float(rng.random()),
                "haze": float(rng.uniform(0, 0.5) * rng.random()), "seed": int(rng.integers(2**31))}

    def render(f: dict) -> np.ndarray:
        growth = 1 / (1 + np.exp(-8 * (f["trend"] - 0.5)))  # the sample's sigmoid growth
        img = timelapse_frame(size, growth, f["day"], f["year"], f["cloud"], f["haze"],
                              np.random.default_rng(f["seed"]), layout)
        return np.asarray(img, dtype=np.float64) / 127.5  # the generator's [-1, 1] scale

    var = {}
    for target in ("z", *factors):
        acc = 0.0
        for _ in range(n):
            a = draw()
            b = dict(a)
            if target == "z":
                b.update({k: v for k, v in draw().items() if k in ("cloud", "haze", "seed")})
            else:
                b[target] = rng.random()
            acc = acc + (render(a) - render(b)) ** 2 / 2
        var[target] = acc / n
    total = np.maximum(sum(var.values()), 1e-3)
    return {k: round(float((var[k] / total).mean()), 4) if k in var else 0.0 for k in ("z", "trend", "year", "day")}


def flicker(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames, in [0, 1] units. frames: uint8 [T, H, W, 3]."""
    f = frames.astype(np.float64) / 255.0
    return float(np.abs(np.diff(f, axis=0)).mean())


STEPS = 300
BARS = {"day_light_corr_median": ">= 0.9", "day_light_corr_min": ">= 0.8", "flicker_ratio_max": "<= 0.3"}


def run_one(args: argparse.Namespace) -> dict:
    """Train one seed and measure it (runs inside a child process)."""
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "timelapse"
        make_timelapse(data, seed=args.data_seed, size=(args.size, args.size), days=args.days)
        cfg = load_config(TimelapseConfig, ROOT / "configs/timelapse/tiny.yaml",
                          [f"data.path={data}", f"model.resolution={args.size}", f"engine.steps={args.steps}",
                           f"engine.out_dir={tmp}/runs", "engine.workers=0", f"engine.seed={args.one}",
                           *args.overrides])
        tr = Trainer(TimelapseRecipe, cfg, DistInfo(device=torch.device("cpu")))
        loader = make_loader(tr.recipe.dataset(), cfg.engine, tr.info, consumed=0)
        t0 = time.perf_counter()
        capped = False
        while tr.step < args.steps:
            if time.perf_counter() - t_start >= args.cap_s:
                capped = True
                break
            tr.train_step(to_device(next(loader), tr.info.device))
        train_s = time.perf_counter() - t0
        G = tr.emas["G"].copies()["G_ema"].eval()
        ds = tr.recipe.data

        # Day sweeps at fixed weathers, trend and year held mid-sequence.
        base = float(G.axis.seconds(0.5))
        n = 48
        base_dt = datetime.fromtimestamp(base, tz=timezone.utc)
        year_phase = (base_dt - datetime(base_dt.year, 1, 1, tzinfo=timezone.utc)).total_seconds() / 86400 / 365.25
        hours = np.arange(n) * 24.0 / n
        truth = true_light_curve(hours, (args.size, args.size), year_phase)
        corrs = []
        for seed in range(4):
            frames = rr.render_all(G, rr.plan_sweep(G, "day", base, n, (seed,)))
            bright = frames.reshape(n, -1).astype(np.float64).mean(1)
            corrs.append(float(np.corrcoef(bright, truth)[0, 1]) if bright.std() > 0 else 0.0)

        # Stabilize over the sample's own capture times vs the raw sequence.
        stab = rr.render_all(G, rr.plan_stabilize(G, ds.seconds, seed=0, hour=12.0, year="follow"))
        raw = np.stack([to_uint8_frames(ds.frame(i)[None], layout="TCHW")[0] for i in range(len(ds))])
        f_stab, f_raw = flicker(stab), flicker(raw)
        ratios = variance_ratios(G, n=128, batch=32, seed=0)
    return {"seed": args.one, "steps": tr.step, "capped": capped, "train_s": round(train_s, 1),
            "kimg": tr.nimg / 1000, "frames": len(ds), "days": int(G.axis.num_days), "factors": list(G.axis.factors),
            "day_light_corr": round(float(np.mean(corrs)), 4), "day_light_corr_weathers": [round(c, 4) for c in corrs],
            "flicker_ratio": round(f_stab / f_raw, 4), "flicker_stabilize": round(f_stab, 5),
            "flicker_raw": round(f_raw, 5), "variance_ratios": {k: round(v, 4) for k, v in ratios.items()},
            "torch_threads": torch.get_num_threads()}


def child(args: argparse.Namespace, seed: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(seed), "--steps", str(args.steps),
           "--cap-s", str(args.cap_s), "--days", str(args.days), "--size", str(args.size),
           "--data-seed", str(args.data_seed)] + sum((["--set", o] for o in args.overrides), [])
    env = dict(os.environ)
    if args.threads:
        cmd += ["--threads", str(args.threads)]
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="training seeds (engine.seed), comma-separated")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at a time (one process each)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps (the figures are measured after these)")
    ap.add_argument("--cap-s", type=float, default=1800.0,
                    help="wall-clock cap per run in seconds: training stops there even short of --steps")
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic time-lapse")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child: train this seed
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(run_one(args)))
        return 0
    t_start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda s: child(args, s), seeds))
    corr = [r["day_light_corr"] for r in runs]
    flick = [r["flicker_ratio"] for r in runs]
    capped = any(r["capped"] for r in runs)
    result = {
        "bench": "timelapse", "config": "configs/timelapse/tiny.yaml", "overrides": args.overrides,
        "resolution": args.size, "frames": runs[0]["frames"], "days": runs[0]["days"], "factors": runs[0]["factors"],
        "steps": args.steps, "kimg": runs[0]["kimg"], "seeds": seeds, "threads": args.threads or "default",
        "day_light_corr_median": round(float(np.median(corr)), 4), "day_light_corr_min": round(min(corr), 4),
        "day_light_corr_seeds": corr, "flicker_ratio_max": round(max(flick), 4), "flicker_ratio_seeds": flick,
        "capped": capped, "train_s_seeds": [r["train_s"] for r in runs],
        "wall_s": round(time.perf_counter() - t_start, 1), "runs": runs,
        "variance_ratios_sample": sample_variance_ratios((args.size, args.size), tuple(runs[0]["factors"])),
        "bars": BARS,
        "pass": bool(np.median(corr) >= 0.9 and min(corr) >= 0.8 and max(flick) <= 0.3 and not capped),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
