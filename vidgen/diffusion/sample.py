"""EDM sampling (METHODS.md sections 3, 5, 6): the step schedule, Euler / Heun / stochastic
samplers, and guidance by CFG or autoguidance inside an optional interval (sigma_lo, sigma_hi].

A sampler sees only a callable ``denoise(x, sigma) -> D(x; sigma)``; :class:`GuidedDenoiser`
builds that callable from networks, conditioning and guidance settings and counts the network
evaluations it makes (``nfe`` of the main network, ``guide_nfe`` of the guide).
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
    sigma_N = 0 (EDM eq. 5). -> [N + 1]"""
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / max(steps - 1, 1)
    t = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(device=device, dtype=dtype)


def in_interval(sigma: float, interval: tuple[float, float] | None) -> bool:
    """Guidance interval membership: (lo, hi] (METHODS.md 6); no interval = everywhere."""
    return interval is None or interval[0] < sigma <= interval[1]


@dataclass
class GuidedDenoiser:
    """``D_w = w D_1 + (1 - w) D_0`` (METHODS.md 5) where the main network gives D_1 and the
    guide D_0: a separate weaker network with the same conditioning (autoguidance), or with
    ``cfg=True`` the main network without its condition. The guide runs only when w != 1 and
    sigma lies in the interval; elsewhere D = D_1 and the guide is not evaluated."""

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

    def __post_init__(self):
        if self.guide is not None and self.cfg:
            raise ValueError("choose either a guide network (autoguidance) or cfg=True, not both")

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        d1 = self.net(x, sigma, self.labels, self.tokens, **self.extra)
        self.nfe += 1
        guided = self.guidance != 1 and (self.guide is not None or self.cfg)
        if not guided or not in_interval(float(sigma), self.interval):
            return d1
        if self.cfg:  # the same network with the condition dropped
            d0 = self.net(x, sigma, None, None, **self.extra)
        else:
            d0 = self.guide(x, sigma, self.labels, self.tokens, **self.extra)
        self.guide_nfe += 1
        self.guide_sigmas.append(float(sigma))
        return d0.lerp(d1, self.guidance)  # w D1 + (1 - w) D0


def sample(denoise: Callable, noise: torch.Tensor, cfg: SamplerConfig,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Integrate the probability-flow ODE (or its stochastic variant) from sigma_max to 0.

    noise: [B, ...] unit Gaussian -> samples of the same shape and dtype. EDM algorithm 2:
    Euler step + Heun correction on every step but the last; with churn, sigma is first raised
    to t_hat = t (1 + gamma), gamma = min(S_churn / N, sqrt 2 - 1) inside [S_tmin, S_tmax]."""
    cfg.check()
    t = edm_schedule(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho).tolist()
    n = cfg.steps
    gamma_max = min(cfg.churn / n, math.sqrt(2) - 1) if cfg.churn > 0 else 0.0
    x = noise * t[0]
    for i in range(n):
        t_cur, t_next = t[i], t[i + 1]
        gamma = gamma_max if cfg.s_tmin <= t_cur <= cfg.s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * cfg.s_noise * eps
        d = (x - denoise(x, t_hat)) / t_hat
        x_next = x + (t_next - t_hat) * d
        if cfg.solver == "heun" and i < n - 1:  # second-order correction (not at sigma = 0)
            d2 = (x_next - denoise(x_next, t_next)) / t_next
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


def expected_nfe(cfg: SamplerConfig) -> dict[str, int]:
    """Network evaluations ``sample`` will make: main (2N - 1 for Heun, N for Euler) and
    guide (the evaluations whose sigma lies in the interval), without running anything."""
    t = edm_schedule(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho).tolist()
    gamma_max = min(cfg.churn / cfg.steps, math.sqrt(2) - 1) if cfg.churn > 0 else 0.0
    sigmas = []
    for i in range(cfg.steps):
        g = gamma_max if cfg.s_tmin <= t[i] <= cfg.s_tmax else 0.0
        sigmas.append(t[i] * (1 + g))
        if cfg.solver == "heun" and i < cfg.steps - 1:
            sigmas.append(t[i + 1])
    guided = cfg.guidance != 1
    return {"nfe": len(sigmas), "guide_nfe": sum(guided and in_interval(s, cfg.interval) for s in sigmas)}
