"""The time-lapse GAN's sampler (`vidgen.registry.Sampler`) for `vidgen eval --fake RUN`.

Equal-time evaluation (docs/METHODS.md 2, "Evaluation"): image `seed` is G_ema(z, t) with
z ~ N(0, I) and the noise inputs drawn from `seed` (as `timelapse render` draws them), psi 1,
and t the capture time of a training frame drawn uniformly (seeded by `seed` too), exactly
(no dequantisation noise). The capture times come from the checkpoint (the recipe stores
them), else from the dataset named in the run's config; a checkpoint with neither (e.g. an
imported one whose data is elsewhere) draws t uniformly in [0, 1] and says so in `info`.
Images are cropped to the valid rectangle of letterboxed frames, so they have the frames'
aspect ratio.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from vidgen.render.writer import to_uint8_frames
from timelapse.model import Generator
from timelapse.rerender import build_generator, seed_noise, seed_z

CAPTURE_KEY = "recipe/capture_seconds"  # train.safetensors key of the recipe's capture times


def capture_seconds(ckpt) -> tuple[np.ndarray | None, str]:
    """(capture times in epoch seconds, where they came from) of a timelapse checkpoint."""
    from safetensors import safe_open

    with safe_open(str(ckpt.path / "train.safetensors"), framework="pt") as f:
        if CAPTURE_KEY in f.keys():
            return f.get_tensor(CAPTURE_KEY).double().numpy(), "checkpoint (training frames' capture times)"
    data = ckpt.config.get("data", {})
    if data.get("path"):
        from vidgen.errors import VidgenError
        from timelapse.frames import TimelapseFrames

        try:
            frames = TimelapseFrames(data["path"], 4, data.get("skip", ()), data.get("time_pattern") or None)
            return frames.seconds.astype(np.float64), f"dataset {data['path']} (capture times)"
        except (VidgenError, OSError):
            pass
    return None, ""


class TimelapseSampler:
    kind = "image"

    def __init__(self, G: Generator, seconds: np.ndarray | None, source: str, step: int):
        self.G = G
        x0, y0, x1, y1 = (int(v) for v in G.out_rect)
        self.rect = (x0, y0, x1, y1)
        self.frame_size = (y1 - y0, x1 - x0)
        self.times = None if seconds is None else G.axis.normalize(seconds).astype(np.float64)
        self.info = {"network": "G_ema", "psi": 1.0, "noise": "drawn from the seed", "step": step,
                     "t_from": source if self.times is not None else
                     "uniform in [0, 1] (no capture times in the checkpoint or its data.path)"}
        if self.times is not None:
            self.info["capture_times"] = len(self.times)

    def time_of(self, seed: int) -> float:
        rng = np.random.default_rng(int(seed))
        if self.times is None:
            return float(rng.random())
        return float(self.times[rng.integers(len(self.times))])

    @torch.no_grad()
    def generate(self, seed: int, n: int) -> np.ndarray:
        """Images of seeds seed..seed+n-1: uint8 [n, h, w, 3] (the valid rectangle)."""
        G, dev = self.G, self.G.w_avg.device
        seeds = range(int(seed), int(seed) + n)
        z = torch.cat([seed_z(G, s) for s in seeds]).to(dev)
        noises = [seed_noise(G, s) for s in seeds]
        noise = [torch.cat(layer).to(dev) for layer in zip(*noises)]
        t = torch.tensor([self.time_of(s) for s in seeds], dtype=torch.float64, device=dev)
        img = G(z, t, noise=noise)
        x0, y0, x1, y1 = self.rect
        return to_uint8_frames(img[..., y0:y1, x0:x1].clamp(-1, 1), layout="TCHW")


def open_sampler(ckpt, device: str | torch.device = "cpu") -> TimelapseSampler:
    """`vidgen.registry` sampler factory: (verified checkpoint, device) -> TimelapseSampler."""
    seconds, source = capture_seconds(ckpt)
    if seconds is None:
        warnings.warn(f"{ckpt.path}: no capture times; equal-time FID needs them, t is drawn uniformly instead",
                      stacklevel=2)
    return TimelapseSampler(build_generator(ckpt, device), seconds, source, ckpt.step)
