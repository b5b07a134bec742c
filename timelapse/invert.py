"""Fit each real frame's latent and noise given its known capture time (``timelapse invert``).

Per frame (StyleGAN2 projector, without a perceptual network so that nothing is downloaded):
start from the average w, optimise w (one w for every layer, or one per layer with
``w_plus``) and the noise maps with Adam under a cosine-ramped learning rate, minimising the
pixel MSE (at full and half resolution) inside the frame's valid rectangle plus a penalty on
the spatial autocorrelation of the noise maps (so the noise cannot carry the image). The
frame's time t is fixed: only the weather is fitted.

Results go to one safetensors file (``w [N, L, D]``, ``noise{k} [N, 1, r, r]``, ``t [N]``,
``done [N]``, ``mse [N]``) rewritten atomically every ``save_every`` frames; running again with
the same output skips the frames already done, so an interrupted inversion resumes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vidgen.errors import VidgenError
from vidgen.fileio import read_safetensors, read_safetensors_metadata, write_safetensors
from timelapse.model import Generator

FORMAT = "timelapse-latents-1"


@dataclass
class InvertConfig:
    steps: int = 300
    lr: float = 0.05
    w_plus: bool = False  # one w per layer instead of one for all
    noise: bool = True  # optimise the noise maps too
    noise_reg: float = 1e3  # weight of the noise autocorrelation penalty
    w_noise: float = 0.05  # noise added to w early on (fraction of the w spread), ramped down
    seed: int = 0


def noise_penalty(noises: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation of each noise map at shifts of 1 px, over an image pyramid."""
    total = noises[0].new_zeros(())
    for n in noises:
        while True:
            total = total + (n * n.roll(1, dims=3)).mean().square() + (n * n.roll(1, dims=2)).mean().square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2) * 2
    return total


def masked_mse(a: torch.Tensor, b: torch.Tensor, rect: tuple[int, int, int, int]) -> torch.Tensor:
    """Mean squared error inside the valid rectangle, at full and at half resolution. a, b: [B, C, R, R]."""
    x0, y0, x1, y1 = rect
    a, b = a[..., y0:y1, x0:x1], b[..., y0:y1, x0:x1]
    full = (a - b).square().mean()
    if min(a.shape[-2:]) < 4:
        return full
    return full + (F.avg_pool2d(a, 2) - F.avg_pool2d(b, 2)).square().mean()


def invert_frame(G: Generator, target: torch.Tensor, t: torch.Tensor, cfg: InvertConfig,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """target: [1, C, R, R] in [-1, 1]; t: [1] normalised time. Returns (ws [1, L, D], noises,
    pixel MSE after every step)."""
    dev = G.w_avg.device
    rect = tuple(int(v) for v in G.out_rect)
    target = target.to(dev)
    t = t.to(dev)
    with torch.no_grad():  # spread of w, for the early exploration noise
        probe = G.mapping(torch.randn(256, G.cfg.z_dim, generator=generator).to(dev))
        w_std = float((probe - G.w_avg).square().sum(1).mean().sqrt())
    L = G.num_ws if cfg.w_plus else 1
    w = G.w_avg.detach().clone()[None, None].repeat(1, L, 1).requires_grad_(True)
    noises = [n.requires_grad_(cfg.noise) for n in G.make_noise(1, generator, dev)]
    params = [w] + (noises if cfg.noise else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    history = []
    for step in range(cfg.steps):
        u = step / max(cfg.steps - 1, 1)
        # Learning-rate ramp: cosine down over the last 75%, linear up over the first 5% (StyleGAN2).
        lr = cfg.lr * min(1.0, u / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - u) / 0.75)))
        for g in opt.param_groups:
            g["lr"] = lr
        jitter = w_std * cfg.w_noise * max(0.0, 1 - u / 0.75) ** 2
        ws = w + torch.randn(w.shape, generator=generator).to(dev) * jitter
        img = G.synthesis(ws.expand(1, G.num_ws, -1), t, noises)
        mse = masked_mse(img, target, rect)
        loss = mse + (cfg.noise_reg * noise_penalty(noises) if cfg.noise else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # keep the noise maps unit Gaussian
            for n in noises:
                n.sub_(n.mean()).div_(n.square().mean().sqrt() + 1e-8)
        history.append(float(mse.detach()))
    with torch.no_grad():
        final = masked_mse(G.synthesis(w.expand(1, G.num_ws, -1), t, noises), target, rect)
    history.append(float(final))
    return w.detach().expand(1, G.num_ws, -1).clone(), [n.detach() for n in noises], history


def _read_latents(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        meta = json.loads(read_safetensors_metadata(path).get("timelapse", "{}"))
    except ValueError:
        meta = {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise VidgenError(f"{path} is not a latents file written by `timelapse invert`; choose another --out")
    return read_safetensors(path), meta


def read_latents(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors (w, noise{k}, t, done, mse) and metadata of a finished or partial inversion."""
    path = Path(path)
    if not path.is_file():
        raise VidgenError(f"{path}: no such latents file; run `timelapse invert` first")
    return _read_latents(path)


def invert_sequence(G: Generator, frames, out: str | Path, cfg: InvertConfig, info: dict | None = None,
                    save_every: int = 4, progress: bool = True) -> dict[str, torch.Tensor]:
    """Invert every item of ``frames`` (items ``(frame [C, R, R], t, ...)``, e.g. a
    TimelapseFrames) into ``out``, resuming from it when it exists for the same frames."""
    out = Path(out)
    N = len(frames)
    meta = {"format": FORMAT, "frames": N, "config": asdict(cfg), **(info or {})}
    if out.is_file():
        state, old = _read_latents(out)
        if old.get("frames") != N or old.get("checkpoint") != meta.get("checkpoint"):
            raise VidgenError(f"{out} holds latents of another run ({old.get('frames')} frames from "
                              f"{old.get('checkpoint')}); choose another --out or delete it")
    else:
        state = {"w": torch.zeros(N, G.num_ws, G.cfg.w_dim), "t": torch.zeros(N, dtype=torch.float64),
                 "done": torch.zeros(N, dtype=torch.bool), "mse": torch.zeros(N)}
        for k, (h, w) in enumerate(G.noise_shapes):
            state[f"noise{k}"] = torch.zeros(N, 1, h, w)
    todo = [i for i in range(N) if not bool(state["done"][i])]
    bar = tqdm(todo, desc="invert", unit="frame", disable=not progress)
    for n_done, i in enumerate(bar, 1):
        item = frames[i]
        frame, t = item[0], torch.as_tensor(item[1], dtype=torch.float32).reshape(1)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)  # per frame: resume = same result
        ws, noises, hist = invert_frame(G, frame[None], t, cfg, gen)
        state["w"][i] = ws[0].cpu()
        for k, n in enumerate(noises):
            state[f"noise{k}"][i] = n[0].cpu()
        state["t"][i], state["mse"][i], state["done"][i] = float(t), hist[-1], True
        bar.set_postfix(mse=f"{hist[-1]:.4f}", start=f"{hist[0]:.4f}")
        if n_done % save_every == 0 or n_done == len(todo):
            write_safetensors(out, state, {"timelapse": json.dumps(meta)})
    if not todo and not out.is_file():
        write_safetensors(out, state, {"timelapse": json.dumps(meta)})
    return state
