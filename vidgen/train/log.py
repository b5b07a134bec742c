"""What a training run tells a person: a progress bar, one JSONL line of stats per tick,
TensorBoard scalars when the ``tensorboard`` package is installed, and sample media.

Only rank 0 logs; the other ranks get a :class:`TrainLogger` with ``enabled=False``.

Each line of ``stats.jsonl`` is a JSON object::

    {"step": 200, "kimg": 1.6, "time_s": 41.2, "sec_per_step": 0.21, "steps_per_s": 4.8,
     "timing": {"data": 0.01, "fwd_bwd": 0.15, "optimizer": 0.04, "logging": 0.01},
     "nonfinite_losses": 0, "nonfinite_grads": 0, "lr": {"G": 0.002, "D": 0.0019},
     "stats": {"G/loss": 0.71, "D/loss": 1.32, ...}}

``timing`` is seconds per step spent in each part since the previous tick: waiting for the
data loader, forward + backward, gradient averaging + optimiser + EMA, and logging /
checkpoints / samples. A slow loader shows up as a large ``data`` share.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vidgen.fileio import write_bytes

TIMING_KEYS = ("data", "fwd_bwd", "optimizer", "logging")


class Timer:
    """Seconds spent per section, accumulated between ticks."""

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self._t = time.perf_counter()

    def lap(self, section: str) -> None:
        now = time.perf_counter()
        self.total[section] += now - self._t
        self._t = now

    def reset(self) -> dict[str, float]:
        out = {k: self.total.get(k, 0.0) for k in TIMING_KEYS}
        self.total.clear()
        return out


class StatsAverager:
    """Running means of named float stats between ticks."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, stats: dict[str, Any]) -> None:
        for k, v in stats.items():
            v = float(v)
            if math.isfinite(v):
                self.sums[k] += v
                self.counts[k] += 1

    def means(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in sorted(self.sums) if self.counts[k]}
        self.sums.clear()
        self.counts.clear()
        return out


class TrainLogger:
    def __init__(self, run_dir: Path | None, total_steps: int, start_step: int, enabled: bool = True):
        self.enabled = enabled and run_dir is not None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.bar = None
        self.tb = None
        if not self.enabled:
            return
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        mininterval=1.0, smoothing=0.1, desc=self.run_dir.name)
        try:  # optional dependency
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except Exception:
            self.tb = None

    def truncate_after(self, step: int) -> None:
        """Drop JSONL lines of steps after ``step`` (see :func:`truncate_stats`)."""
        if self.enabled:
            truncate_stats(self.run_dir, step)

    def step(self, step: int, kimg: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0:
                self.bar.set_postfix(kimg=f"{kimg:.1f}", refresh=False)

    def tick(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["step"]
            for k, v in record.get("stats", {}).items():
                self.tb.add_scalar(k, v, step)
            for k, v in record.get("timing", {}).items():
                self.tb.add_scalar(f"timing/{k}", v, step)
            self.tb.add_scalar("progress/kimg", record["kimg"], step)
            self.tb.flush()

    def write(self, message: str) -> None:
        if self.enabled:
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            with tqdm.get_lock():  # tqdm keeps its monitor thread after the last bar closes
                if not tqdm._instances and tqdm.monitor is not None:
                    tqdm.monitor.exit()
                    tqdm.monitor = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def truncate_stats(run_dir: Path, step: int) -> None:
    """Drop the lines of ``RUN/stats.jsonl`` of steps after ``step`` (written before a crash,
    redone on resume; all of them when a run starts again at step 0)."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut short by a kill
    write_bytes(path, "".join(line + "\n" for line in keep).encode())


def save_samples(media: torch.Tensor, folder: Path, step: int, fps: float = 8.0) -> Path:
    """Write sample media in [-1, 1]: images ``[N, C, H, W]`` as one PNG grid, clips
    ``[N, C, T, H, W]`` as one MP4 of grids. Returns the file written."""
    from vidgen.render.layout import grid
    from vidgen.render.writer import save_png, to_uint8_frames, write_video

    folder.mkdir(parents=True, exist_ok=True)
    media = media.detach().float().cpu()
    settings = {"step": step, "kind": "training samples"}
    if media.ndim == 4:  # images [N, C, H, W] -> uint8 [N, H, W, 3]
        frames = to_uint8_frames(media, layout="TCHW")
    elif media.ndim == 5:  # clips [N, C, T, H, W] -> uint8 [N, T, H, W, 3]
        frames = np.stack([to_uint8_frames(clip, layout="CTHW") for clip in media])
    else:
        raise ValueError(f"sample media must be [N, C, H, W] or [N, C, T, H, W], got {tuple(media.shape)}")
    tiles = grid(frames)  # [H', W', 3] or [T, H', W', 3]
    if media.ndim == 4:
        return save_png(folder / f"samples-{step:09d}.png", tiles, settings=settings)
    return write_video(folder / f"samples-{step:09d}.mp4", tiles, fps, settings=settings)
