"""EDM sampling (docs/METHODS.md sections 3, 5, 6): the step schedule, Euler / Heun / stochastic
samplers, and guidance by CFG or autoguidance inside an optional interval (sigma_lo, sigma_hi].

A sampler sees only a callable ``denoise(x, sigma) -> D(x; sigma)``; :class:`GuidedDenoiser`
builds that callable from networks, conditioning and guidance settings and counts the network
evaluations it makes (``nfe`` of the main network, ``guide_nfe`` of the guide). It also passes
on what the main network's preconditioning supports (``sigma_limits``, ``round_sigma``), to
which the schedule is clamped and rounded as in EDM's sampler.

Precision: the whole trajectory (schedule, state, every update) runs in ``SamplerConfig.dtype``
(default: the noise's dtype), the denoiser's output cast to it. EDM's reference sampler works
in float64, EDM2's in float32; imported runs record which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Callable, Literal

import torch

from vidgen.config import AllowInf


@dataclass
class SamplerConfig:
    """How to sample (the ``sample`` section / `vidgen diffusion sample` options)."""

    steps: int = 32
    solver: Literal["heun", "euler"] = "heun"  # heun: 2nd order, 2N-1 evaluations; euler: N evaluations
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    churn: float = 0.0  # S_churn; > 0 makes the sampler stochastic (EDM algorithm 2)
    s_tmin: float = 0.0
    s_tmax: Annotated[float, AllowInf] = math.inf
    s_noise: float = 1.0
    dtype: Literal["float32", "float64"] | None = None  # of the trajectory; None: the noise's dtype
    guidance: float = 1.0  # w; 1 = no guidance
    interval: tuple[float, float] | None = None  # guide only when sigma in (lo, hi]

    def check(self) -> None:
        from vidgen.errors import ConfigError
        if self.steps < 1:
            raise ConfigError(f"sample.steps must be >= 1; got {self.steps}")
        if self.solver not in ("heun", "euler"):
            raise ConfigError(f"sample.solver must be 'heun' or 'euler'; got {self.solver!r}")
        if self.interval is not None and not self.interval[0] < self.interval[1]:
            raise ConfigError(f"guidance interval must be lo,hi with lo < hi; got {self.interval}")


def edm_schedule(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                 device=None, dtype=torch.float64) -> torch.Tensor:
    """sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < N, and
    sigma_N = 0 (EDM eq. 5), evaluated in ``dtype``. -> [N + 1]"""
    i = torch.arange(steps, dtype=dtype, device=device)
    t = (sigma_max ** (1 / rho) + i / max(steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros_like(t[:1])])


def in_interval(sigma: float, interval: tuple[float, float] | None) -> bool:
    """Guidance interval membership: (lo, hi] (docs/METHODS.md 6); no interval = everywhere."""
    return interval is None or interval[0] < sigma <= interval[1]


@dataclass
class GuidedDenoiser:
    """``D_w = w D_1 + (1 - w) D_0`` (docs/METHODS.md 5) where the main network gives D_1 and the
    guide D_0: a separate weaker network with the same conditioning (autoguidance), or with
    ``cfg=True`` an unconditional model: the separate ``guide`` called without the class
    (e.g. EDM2's unconditional XS guides), else the main network without its condition. The
    guide runs only when w != 1 and sigma lies in the interval; elsewhere D = D_1 and the
    guide is not evaluated."""

    net: Callable
    guide: Callable | None = None
    cfg: bool = False
    guidance: float = 1.0
    interval: tuple[float, float] | None = None
    labels: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)  # e.g. paint=PaintWithWords(...)
    nfe: int = 0
    guide_nfe: int = 0
    guide_sigmas: list = field(default_factory=list)

    @property
    def sigma_limits(self) -> tuple[float, float]:
        """The noise range the main network supports (EDM's VP / VE / iDDPM nets have one)."""
        return getattr(self.net, "sigma_min", 0.0), getattr(self.net, "sigma_max", math.inf)

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        rounding = getattr(self.net, "round_sigma", None)
        return rounding(sigma) if rounding is not None else sigma

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        d1 = self.net(x, sigma, self.labels, self.tokens, **self.extra)
        self.nfe += 1
        guided = self.guidance != 1 and (self.guide is not None or self.cfg)
        if not guided or not in_interval(float(sigma), self.interval):
            return d1
        if self.cfg:  # an unconditional model: the condition dropped
            d0 = (self.guide if self.guide is not None else self.net)(x, sigma, None, None, **self.extra)
        else:
            d0 = self.guide(x, sigma, self.labels, self.tokens, **self.extra)
        self.guide_nfe += 1
        self.guide_sigmas.append(float(sigma))
        return d0.lerp(d1, self.guidance)  # w D1 + (1 - w) D0


def sample(denoise: Callable, noise: torch.Tensor, cfg: SamplerConfig,
           generator: torch.Generator | None = None,
           step_noise: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Integrate the probability-flow ODE (or its stochastic variant) from sigma_max to 0.

    noise: [B, ...] unit Gaussian -> samples [B, ...] in the trajectory dtype. EDM algorithm 2:
    Euler step + Heun correction on every step but the last; with churn, at steps whose sigma
    lies in [S_tmin, S_tmax] sigma is first raised to t_hat = t (1 + gamma), gamma =
    min(S_churn / N, sqrt 2 - 1), by adding noise scaled by S_noise: ``step_noise(i, x)``
    when given (e.g. :class:`SeedNoise`), else ``randn`` from ``generator``. ``denoise`` may
    carry ``sigma_limits`` and ``round_sigma`` (:class:`GuidedDenoiser` does)."""
    cfg.check()
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else noise.dtype
    lo, hi = getattr(denoise, "sigma_limits", (0.0, math.inf))
    round_sigma = getattr(denoise, "round_sigma", None) or (lambda s: s)
    t = edm_schedule(cfg.steps, max(cfg.sigma_min, lo), min(cfg.sigma_max, hi), cfg.rho, noise.device, dtype)
    t = torch.cat([round_sigma(t[:-1]), t[-1:]])
    n = cfg.steps
    x = noise.to(dtype) * t[0]
    for i in range(n):
        t_cur, t_next = t[i], t[i + 1]
        if cfg.churn > 0 and cfg.s_tmin <= t_cur <= cfg.s_tmax:
            gamma = min(cfg.churn / n, math.sqrt(2) - 1)
            t_hat = round_sigma(t_cur + gamma * t_cur)
            eps = step_noise(i, x) if step_noise is not None else \
                torch.randn(x.shape, generator=generator, device=x.device, dtype=dtype)
            x_hat = x + (t_hat ** 2 - t_cur ** 2).sqrt() * cfg.s_noise * eps.to(dtype)
        else:
            t_hat, x_hat = t_cur, x
        d = (x_hat - denoise(x_hat, t_hat).to(dtype)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d
        if cfg.solver == "heun" and i < n - 1:  # second-order correction (not at sigma = 0)
            d2 = (x_next - denoise(x_next, t_next).to(dtype)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


class SeedNoise:
    """One generator per sample, seeded with its seed, so an image does not depend on the
    batch it is drawn in: ``randn(shape)`` gives the initial noise [B, *shape], ``randint``
    a class per sample, and calling it as ``step_noise(i, x)`` the churn noise, each drawn
    from the sample's own generator in that order (as EDM's and EDM2's generate scripts do)."""

    def __init__(self, seeds: list[int], device="cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(int(s) % (1 << 32)) for s in seeds]

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        return torch.stack([torch.randint(high, size=[], generator=g, device=self.device) for g in self.generators])

    def __call__(self, step: int, x: torch.Tensor) -> torch.Tensor:
        return self.randn(x.shape[1:], dtype=x.dtype)


def expected_nfe(cfg: SamplerConfig) -> dict[str, int]:
    """Network evaluations ``sample`` will make with float32 noise (or in ``cfg.dtype``) and no
    network limits: main (2N - 1 for Heun, N for Euler) and guide (the evaluations whose sigma
    lies in the interval), without running anything."""
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else torch.float32
    t = edm_schedule(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, dtype=dtype).tolist()
    gamma_max = min(cfg.churn / cfg.steps, math.sqrt(2) - 1) if cfg.churn > 0 else 0.0
    sigmas = []
    for i in range(cfg.steps):
        g = gamma_max if cfg.s_tmin <= t[i] <= cfg.s_tmax else 0.0
        sigmas.append(t[i] * (1 + g))
        if cfg.solver == "heun" and i < cfg.steps - 1:
            sigmas.append(t[i + 1])
    guided = cfg.guidance != 1
    return {"nfe": len(sigmas), "guide_nfe": sum(guided and in_interval(s, cfg.interval) for s in sigmas)}
