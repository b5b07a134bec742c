"""Loader throughput: ClipDataset through a DataLoader vs raw decord decoding, one JSON line.

Procedural drive videos (144x256 mp4, written to a temporary folder) are read as 16-frame
clips at 64x64 by a DataLoader with 2 workers, (a) straight from the videos and (b) from a
dataset prepared at 64x64. The baseline, measured in the same run, decodes the SAME clips
(same videos, same frames) with decord ``get_batch`` sequentially in this process, without
resizing or tensor conversion. Bars: raw >= 0.8x baseline, prepared >= 2x baseline.

    python tools/bench_loader.py [--clips 160] [--videos 4] [--frames 240] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidgen.data.datasets import ClipDataset
from vidgen.data.prepare import PrepareConfig, prepare
from vidgen.data.synthetic import make_drive


def loader_rate(dataset, order: list[int], batch: int, workers: int) -> float:
    """Clips per second through a DataLoader over ``order`` (first batch = warm-up)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=order, num_workers=workers,
                                         persistent_workers=False, prefetch_factor=4)
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for x in it:
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=160)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import decord

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_drive(Path(tmp) / "videos", seed=0, frames=args.frames, size=(144, 256), videos=args.videos)
        prepare(PrepareConfig(inputs=[str(Path(tmp) / "videos")], out=str(Path(tmp) / "prepared"),
                              resolutions=[(64, 64)]), log=lambda msg: None)
        raw = ClipDataset(Path(tmp) / "videos", 16, resolution=(64, 64), random_start=False)
        prep = ClipDataset(Path(tmp) / "prepared", 16, resolution=(64, 64), random_start=False)
        assert raw.windows == prep.windows
        rng = np.random.default_rng(0)
        order = [int(i) for i in rng.integers(0, len(raw), args.clips)]

        # baseline: the same clips decoded with decord, sequentially, in this process
        readers = [decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1) for p in videos]

        def baseline() -> float:
            t0 = time.perf_counter()
            for i in order:
                k, start = raw.windows[i]
                readers[k].get_batch(list(range(start, start + 16))).asnumpy()
            return len(order) / (time.perf_counter() - t0)

        t0 = time.perf_counter()  # reference only: plain sequential decode of whole videos
        nframes = 0
        for p in videos:
            vr = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
            nframes += len(vr.get_batch(list(range(len(vr)))).asnumpy())
        seq_fps = nframes / (time.perf_counter() - t0)
        # rounds alternate the three measurements so that load from other processes on the
        # machine affects them alike; the best round of each is reported
        rates = {"base": [], "raw": [], "prep": []}
        for _ in range(args.rounds):
            rates["base"].append(baseline())
            rates["raw"].append(loader_rate(raw, order, args.batch, 2))
            rates["prep"].append(loader_rate(prep, order, args.batch, 2))
        base, raw_rate, prep_rate = (max(rates[k]) for k in ("base", "raw", "prep"))
    result = {
        "bench": "loader", "clip": "16x64x64", "workers": 2, "clips": len(order),
        "backend_raw": raw.sources.backend, "cpus": os.cpu_count(), "rounds": args.rounds,
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "decord_same_clips_per_s": round(base, 2), "decord_sequential_frames_per_s": round(seq_fps, 1),
        "raw_clips_per_s": round(raw_rate, 2), "prepared_clips_per_s": round(prep_rate, 2),
        "raw_ratio": round(raw_rate / base, 2), "prepared_ratio": round(prep_rate / base, 2),
        "bar_raw": 0.8, "bar_prepared": 2.0,
        "pass": bool(raw_rate >= 0.8 * base and prep_rate >= 2.0 * base),
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
