"""Headless re-rendering of a trained time-lapse GAN (docs/METHODS.md section 2, "What users do").

Every mode builds a :class:`Plan` (per frame: the w's, the time of each factor, the noise
inputs) and :func:`render` turns it into uint8 frames chunk by chunk, so arbitrarily long
sequences go through ``vidgen.render`` in bounded memory.

- stabilize: one weather (fixed z and noise), the trend advancing with the dates, the time of
  day held (``hour``), the yearly phase following the dates or held;
- sweep: one factor (trend | year | day) moves over its whole range, the others are held;
- restyle: the same dates under several weather seeds (tiled), or z interpolated between
  seeds along the sequence;
- grid: factor values x seeds in one image; stack: a time-lapse strip of a render;
- real: inverted real frames (``timelapse invert``) re-rendered with one weather for all
  frames, or at another time of day.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from einops import rearrange, repeat

from vidgen.errors import ConfigError
from vidgen.render.writer import to_uint8_frames
from vidgen.train.sidecar import load_network_state
from timelapse.model import Generator
from timelapse.time import DAY, YEAR_DAYS, TimeAxis, phase_of_hour

MODES = ("stabilize", "sweep", "restyle", "grid", "stack", "real")


@dataclass
class Plan:
    """What to render. ws: [T, L, D]; t: [T, F] (normalised time per factor) or [T, L, F];
    noise: one [1 or T, 1, r, r] tensor per conv (1 = the same noise for every frame)."""

    ws: torch.Tensor
    t: torch.Tensor
    noise: list[torch.Tensor]

    def __len__(self) -> int:
        return self.ws.shape[0]


# --- loading -----------------------------------------------------------------------------------
def load_generator(path, device: str | torch.device = "cpu", network: str = "G_ema") -> tuple[Generator, dict]:
    """The generator of a timelapse checkpoint (run folder or checkpoint folder), in eval mode."""
    from vidgen.train.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    if ckpt.family != "timelapse":
        raise ConfigError(f"{ckpt.path} is a {ckpt.family!r} checkpoint; `timelapse render` needs a timelapse one")
    return build_generator(ckpt, device, network), {"checkpoint": str(ckpt.path), "step": ckpt.step}


def build_generator(ckpt, device: str | torch.device = "cpu", network: str = "G_ema") -> Generator:
    """``network`` (else G) of a verified timelapse checkpoint, with its stored time axis, in eval mode."""
    from vidgen.config import config_from_dict
    from timelapse.recipe import TimelapseConfig

    cfg = config_from_dict(TimelapseConfig, ckpt.config)
    name = network if network in ckpt.network_names else "G"
    state = ckpt.network_state(name)
    if not {"time.axis_start", "time.axis_days", "out_rect"} <= set(state) or state["out_rect"].numel() != 4:
        raise ConfigError(f"{ckpt.path}: network {name!r} lacks the time axis or output rectangle of a "
                          "timelapse generator")
    axis = TimeAxis(float(state["time.axis_start"]), int(state["time.axis_days"]), cfg.time.lin_scale,
                    cfg.time.trend_harmonics)
    G = Generator(cfg.model, axis, tuple(int(v) for v in state["out_rect"].tolist()))
    load_network_state(G, state, str(ckpt.path), name)
    return G.eval().requires_grad_(False).to(device)


# --- pieces ------------------------------------------------------------------------------------
def seed_z(G: Generator, seed: int) -> torch.Tensor:
    """z of one weather seed: [1, z_dim], the same on every device."""
    return torch.randn(1, G.cfg.z_dim, generator=torch.Generator().manual_seed(int(seed)))


def seed_noise(G: Generator, seed: int) -> list[torch.Tensor]:
    return G.make_noise(1, torch.Generator().manual_seed(int(seed) + 1_000_003))


def seed_ws(G: Generator, seeds, psi: float = 1.0) -> torch.Tensor:
    """[len(seeds), L, D]."""
    dev = G.w_avg.device
    z = torch.cat([seed_z(G, s) for s in seeds]).to(dev)
    with torch.no_grad():
        return G.map(z, psi)


def slerp(a: torch.Tensor, b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of Gaussian latents. a, b: [D]; u: [T] -> [T, D]."""
    na, nb = a / a.norm(), b / b.norm()
    omega = torch.arccos((na * nb).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    u = u[:, None]
    mid = (torch.sin((1 - u) * omega) * a + torch.sin(u * omega) * b) / torch.sin(omega)
    return torch.where(u == 0, a, torch.where(u == 1, b, mid))  # the seeds' own latents at the ends


def factor_t(axis: TimeAxis, trend, year, day) -> torch.Tensor:
    """Per-factor normalised times (arrays of one length, or scalars) -> [T, F]."""
    vals = {"trend": trend, "year": year, "day": day}
    cols = [np.broadcast_to(np.asarray(vals[f], dtype=np.float64), np.broadcast(trend, year, day).shape)
            for f in axis.factors]
    # float64: the daily phase of t must survive thousands of cycles (docs/METHODS.md 2)
    return torch.tensor(np.stack(cols, -1).reshape(-1, len(cols)), dtype=torch.float64)


def hour_t(axis: TimeAxis, seconds: np.ndarray, hour: float) -> np.ndarray:
    """t of the same day as ``seconds`` but at ``hour`` UTC (only the daily phase matters)."""
    midnight = np.floor(np.asarray(seconds) / DAY) * DAY
    return axis.normalize(midnight) + phase_of_hour(hour, axis)


# --- modes -------------------------------------------------------------------------------------
def plan_stabilize(G: Generator, seconds, seed: int, hour: float | None = 12.0, year: str = "follow",
                   freeze_trend: bool = False, psi: float = 1.0, layers: tuple[int, int] | None = None) -> Plan:
    """One weather, the trend advancing, time of day held at ``hour`` (None: follows the dates),
    yearly phase following the dates (``year="follow"``) or held at the first date ("hold").
    ``layers = (a, b)`` holds the factors only in w layers a..b-1 (coarse or fine styles); the
    other layers see the true dates."""
    if year not in ("follow", "hold"):
        raise ConfigError(f"--year {year!r}: choose follow or hold")
    axis, s = G.axis, np.asarray(seconds, dtype=np.float64)
    t = axis.normalize(s)
    trend = np.full_like(t, t[0]) if freeze_trend else t
    yr = t if year == "follow" else np.full_like(t, t[0])
    day = t if hour is None else hour_t(axis, s, hour)
    ws = repeat(seed_ws(G, [seed], psi)[0], "l d -> t l d", t=len(t))
    return Plan(ws, in_layers(G, factor_t(axis, trend, yr, day), factor_t(axis, t, t, t), layers), seed_noise(G, seed))


def in_layers(G: Generator, held: torch.Tensor, free: torch.Tensor, layers: tuple[int, int] | None) -> torch.Tensor:
    """Per-layer times: ``held`` [T, F] in w layers a..b-1, ``free`` [T, F] elsewhere -> [T, L, F]
    (or ``held`` itself when ``layers`` is None)."""
    if layers is None:
        return held
    a, b = layers
    if not 0 <= a < b <= G.num_ws:
        raise ConfigError(f"--layers {a}:{b}: expected A:B with 0 <= A < B <= {G.num_ws} (the generator's w layers)")
    out = repeat(free, "t f -> t l f", l=G.num_ws).clone()
    out[:, a:b] = held[:, None]
    return out


def sweep_values(axis: TimeAxis, factor: str, base_t: float, frames: int) -> np.ndarray:
    """The moving factor's t: the whole sequence (trend), one year, or one day from ``base_t``."""
    if factor == "trend":
        return np.linspace(0.0, 1.0, frames)
    period = {"year": YEAR_DAYS * DAY, "day": DAY}.get(factor)
    if period is None:
        raise ConfigError(f"--factor {factor!r}: choose trend, year or day")
    return base_t + np.arange(frames) / frames * period / axis.span


def plan_sweep(G: Generator, factor: str, base_seconds: float, frames: int, seeds=(0,), hour: float = 12.0,
               psi: float = 1.0) -> Plan:
    """``factor`` moves, the others are held at ``base_seconds`` (day held at ``hour``).
    Several seeds give len(seeds) * frames frames, seed-major."""
    axis = G.axis
    base = float(axis.normalize(base_seconds))
    base_day = float(hour_t(axis, np.array([base_seconds]), hour)[0])
    start = float(axis.normalize(np.floor(base_seconds / DAY) * DAY)) if factor == "day" else base
    moving = sweep_values(axis, factor, start, frames)
    held = {"trend": base, "year": base, "day": base_day}
    t = factor_t(axis, *(moving if f == factor else held[f] for f in ("trend", "year", "day")))
    ws = repeat(seed_ws(G, seeds, psi), "s l d -> (s t) l d", t=frames)
    noises = [torch.cat([n] * frames) for n in _stack_noise(G, seeds)]
    return Plan(ws, t.repeat(len(seeds), 1), noises)


def _stack_noise(G: Generator, seeds) -> list[torch.Tensor]:
    per_seed = [seed_noise(G, s) for s in seeds]
    return [rearrange(torch.stack([ns[k] for ns in per_seed]), "s 1 c h w -> s c h w") for k in range(len(per_seed[0]))]


def plan_restyle(G: Generator, seconds, seeds, hour: float | None = 12.0, interp: bool = False,
                 psi: float = 1.0) -> list[Plan]:
    """The same dates under each seed (one plan per seed), or with ``interp`` one plan whose
    weather moves from seed to seed along the sequence (z slerped, noise blended)."""
    if not interp:
        return [plan_stabilize(G, seconds, s, hour, "follow", False, psi) for s in seeds]
    if len(seeds) < 2:
        raise ConfigError("--interp needs at least two --seeds")
    base = plan_stabilize(G, seconds, seeds[0], hour, "follow", False, psi)
    T = len(base)
    pos = np.linspace(0, len(seeds) - 1, T)
    k = np.minimum(np.floor(pos).astype(int), len(seeds) - 2)
    u = torch.tensor(pos - k, dtype=torch.float32)
    zs = [seed_z(G, s)[0] for s in seeds]
    z = torch.stack([slerp(zs[k[i]], zs[k[i] + 1], u[i:i + 1])[0] for i in range(T)])
    with torch.no_grad():
        ws = G.map(z.to(G.w_avg.device), psi)
    noise_seeds = [seed_noise(G, s) for s in seeds]
    noise = []
    for j in range(len(noise_seeds[0])):
        a = torch.stack([noise_seeds[k[i]][j][0] for i in range(T)])
        b = torch.stack([noise_seeds[k[i] + 1][j][0] for i in range(T)])
        w = u[:, None, None, None]
        noise.append((a * torch.cos(w * np.pi / 2) + b * torch.sin(w * np.pi / 2)))  # unit variance kept
    return [Plan(ws, base.t, noise)]


def plan_real(G: Generator, latents: dict[str, torch.Tensor], mode: str = "weather", seed: int | None = None,
              hour: float | None = None) -> Plan:
    """Re-render inverted real frames. mode "weather": one weather for every frame (the mean
    of the inverted w's, or ``seed``) at each frame's own time; mode "hour": each frame's own
    weather moved to ``hour``."""
    axis = G.axis
    t = latents["t"].double().numpy()
    ws, T = latents["w"].float(), len(t)
    noise = [latents[f"noise{k}"].float() for k in range(len(G.convs))]
    if mode == "weather":
        if seed is not None:
            w_one, noise = seed_ws(G, [seed])[0], seed_noise(G, seed)
        else:  # the footage's typical weather: the mean w, with the noise of the frame nearest to it
            w_one = ws.mean(0)
            k = int((ws - w_one).square().sum((1, 2)).argmin())
            noise = [n[k:k + 1] for n in noise]
        ws = repeat(w_one, "l d -> t l d", t=T)
        day = t if hour is None else hour_t(axis, axis.seconds(t), hour)
    elif mode == "hour":
        if hour is None:
            raise ConfigError("render real --mode hour needs --hour")
        day = hour_t(axis, axis.seconds(t), hour)
    else:
        raise ConfigError(f"--mode {mode!r}: choose weather or hour")
    return Plan(ws.to(G.w_avg.device), factor_t(axis, t, t, day), noise)


# --- rendering ---------------------------------------------------------------------------------
@torch.no_grad()
def render(G: Generator, plan: Plan, chunk: int = 16, crop: bool = True) -> Iterator[np.ndarray]:
    """uint8 frames [n, H, W, 3] in chunks of ``chunk``; ``crop`` keeps the valid rectangle."""
    dev = G.w_avg.device
    x0, y0, x1, y1 = (int(v) for v in G.out_rect)
    for a in range(0, len(plan), chunk):
        b = min(a + chunk, len(plan))
        noise = [(n if n.shape[0] == 1 else n[a:b]).to(dev).expand(b - a, -1, -1, -1) for n in plan.noise]
        img = G.synthesis(plan.ws[a:b].to(dev), plan.t[a:b].to(dev), noise)
        if crop:
            img = img[..., y0:y1, x0:x1]
        yield to_uint8_frames(img, layout="TCHW")  # img: [B, C, H, W] in [-1, 1]


def render_all(G: Generator, plan: Plan, chunk: int = 16) -> np.ndarray:
    return np.concatenate(list(render(G, plan, chunk)))


def tiled(G: Generator, plans: list[Plan], chunk: int = 16) -> Iterator[np.ndarray]:
    """Several plans of one length rendered side by side (a grid per frame), in chunks."""
    from vidgen.render.layout import grid

    streams = [render(G, p, chunk) for p in plans]
    for parts in zip(*streams):
        yield grid(list(parts), ncols=len(parts) if len(parts) <= 4 else None)
