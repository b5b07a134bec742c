"""Benchmark of the time-lapse GAN on the embedded synthetic time-lapse (METHODS.md 2).

Trains configs/timelapse/tiny.yaml through the shared engine for a fixed wall-clock budget,
then measures with the EMA generator:
- day_light_corr: Pearson correlation between the mean brightness of a fixed-z day sweep
  (time of day moving, trend and year held) and the sample's true daily light curve
  (its renderer with clouds and haze off). Bar: >= 0.9.
- flicker_ratio: mean absolute frame-to-frame difference of a `stabilize` render over the
  sample's own capture times (one weather, noon), divided by that of the raw sample sequence.
  Bar: <= 0.3.
- variance_ratios: shares of output variance due to z, noise, t, trend, year, day.
Prints one JSON line.

    python tools/bench_timelapse.py [--budget-s 540] [--days 400] [--size 32]
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


def flicker(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames, in [0, 1] units. frames: uint8 [T, H, W, 3]."""
    f = frames.astype(np.float64) / 255.0
    return float(np.abs(np.diff(f, axis=0)).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=540.0, help="training wall-clock budget in seconds (<= 900)")
    ap.add_argument("--days", type=int, default=400)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "timelapse"
        make_timelapse(data, seed=args.seed, size=(args.size, args.size), days=args.days)
        cfg = load_config(TimelapseConfig, ROOT / "configs/timelapse/tiny.yaml",
                          [f"data.path={data}", f"model.resolution={args.size}", "engine.steps=1000000",
                           f"engine.out_dir={tmp}/runs", "engine.workers=0", *args.overrides])
        tr = Trainer(TimelapseRecipe, cfg, DistInfo(device=torch.device("cpu")))
        loader = make_loader(tr.recipe.dataset(), cfg.engine, tr.info, consumed=0)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.budget_s:
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
        raw = np.stack([rr.to_uint8(ds.frame(i)[None])[0] for i in range(len(ds))])
        f_stab, f_raw = flicker(stab), flicker(raw)
        ratios = variance_ratios(G, n=128, batch=32, seed=0)

    result = {
        "bench": "timelapse", "config": "configs/timelapse/tiny.yaml", "resolution": args.size,
        "frames": len(ds), "days": int(G.axis.num_days), "factors": list(G.axis.factors),
        "train_s": round(train_s, 1), "steps": tr.step, "kimg": tr.nimg / 1000,
        "day_light_corr": round(corrs[0], 4), "day_light_corr_seeds": [round(c, 4) for c in corrs],
        "flicker_ratio": round(f_stab / f_raw, 4), "flicker_stabilize": round(f_stab, 5), "flicker_raw": round(f_raw, 5),
        "variance_ratios": {k: round(v, 4) for k, v in ratios.items()},
        "bars": {"day_light_corr": ">= 0.9", "flicker_ratio": "<= 0.3"},
        "pass": bool(corrs[0] >= 0.9 and f_stab / f_raw <= 0.3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
