"""Benchmark of the time-lapse GAN on the embedded synthetic time-lapse (METHODS.md 2).

Trains configs/timelapse/tiny.yaml through the shared engine for a fixed number of steps
(default 300; a wall-clock cap, default 14 min, stops a run on a very slow machine and the
JSON says so), so the figures depend on the code, not on how busy the machine is. Then it
measures with the EMA generator:
- day_light_corr: Pearson correlation between the mean brightness of a fixed-z day sweep
  (time of day moving, trend and year held) and the sample's true daily light curve
  (its renderer with clouds and haze off). Bar: >= 0.9.
- flicker_ratio: mean absolute frame-to-frame difference of a `stabilize` render over the
  sample's own capture times (one weather, noon), divided by that of the raw sample sequence.
  Bar: <= 0.3.
- variance_ratios: shares of output variance due to z, noise, t, trend, year, day; and
  variance_ratios_sample, the same shares of the sample's own renderer (weather in place of
  z), i.e. what a generator that learnt the sample exactly would show.
Prints one JSON line.

    python tools/bench_timelapse.py [--steps 300] [--cap-s 840] [--days 400] [--size 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="training steps (the figures are measured after these)")
    ap.add_argument("--cap-s", type=float, default=840.0,
                    help="wall-clock cap in seconds: training stops there even short of --steps ('capped' says so)")
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "timelapse"
        make_timelapse(data, seed=args.seed, size=(args.size, args.size), days=args.days)
        cfg = load_config(TimelapseConfig, ROOT / "configs/timelapse/tiny.yaml",
                          [f"data.path={data}", f"model.resolution={args.size}", f"engine.steps={args.steps}",
                           f"engine.out_dir={tmp}/runs", "engine.workers=0", *args.overrides])
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

        # Day sweep at a fixed z, trend and year held mid-sequence.
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
            corrs.append(float(np.corrcoef(bright, truth)[0, 1]))

        # Stabilize over the sample's own capture times vs the raw sequence.
        stab = rr.render_all(G, rr.plan_stabilize(G, ds.seconds, seed=0, hour=12.0, year="follow"))
        raw = np.stack([to_uint8_frames(ds.frame(i)[None], layout="TCHW")[0] for i in range(len(ds))])
        f_stab, f_raw = flicker(stab), flicker(raw)
        ratios = variance_ratios(G, n=128, batch=32, seed=0)
        sample_ratios = sample_variance_ratios((args.size, args.size), G.axis.factors)

    result = {
        "bench": "timelapse", "config": "configs/timelapse/tiny.yaml", "overrides": args.overrides,
        "resolution": args.size, "frames": len(ds), "days": int(G.axis.num_days), "factors": list(G.axis.factors),
        "steps": tr.step, "target_steps": args.steps, "capped": capped, "cap_s": args.cap_s,
        "train_s": round(train_s, 1), "wall_s": round(time.perf_counter() - t_start, 1), "kimg": tr.nimg / 1000,
        "day_light_corr": round(corrs[0], 4), "day_light_corr_seeds": [round(c, 4) for c in corrs],
        "flicker_ratio": round(f_stab / f_raw, 4), "flicker_stabilize": round(f_stab, 5), "flicker_raw": round(f_raw, 5),
        "variance_ratios": {k: round(v, 4) for k, v in ratios.items()},
        "variance_ratios_sample": sample_ratios,
        "bars": {"day_light_corr": ">= 0.9", "flicker_ratio": "<= 0.3"},
        "pass": bool(corrs[0] >= 0.9 and f_stab / f_raw <= 0.3 and not capped),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
