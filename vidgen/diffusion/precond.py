"""Preconditionings: the denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` around a
raw network F, for the four formulations of EDM table 1 (Karras et al. 2022):

| kind | c_skip | c_out | c_in | c_noise |
|---|---|---|---|---|
| ``vp`` (DDPM++) | 1 | -s | 1/sqrt(s^2+1) | (M-1) t(s), t the inverse of s(t) = sqrt(e^(b_d t^2/2 + b_min t) - 1) |
| ``ve`` (NCSN++) | 1 | s | 1 | ln(s/2) |
| ``iddpm`` (ADM) | 1 | -s | 1/sqrt(s^2+1) | M-1-j, j the index of the nearest u_j |
| ``edm`` | sd^2/(s^2+sd^2) | s sd/sqrt(s^2+sd^2) | 1/sqrt(s^2+sd^2) | ln(s)/4 |

EDM2 (Karras et al. 2024) uses ``edm`` plus the uncertainty head u(sigma): a magnitude-
preserving Fourier embedding of c_noise and one linear layer (``logvar_channels`` > 0).

Each kind also fixes the range of sigma the network supports (``sigma_min``/``sigma_max``;
the sampler clamps its schedule to it) and, for iDDPM, the discrete set of sigmas it was
trained on (``round_sigma``). Like the published code, the coefficients and the limits are
computed in float32 from the float32 sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from vidgen.errors import ConfigError
from vidgen.nn.mp import MPConv, MPFourier

PrecondKind = Literal["edm", "vp", "ve", "iddpm"]


@dataclass
class PrecondConfig:
    """The ``precond`` section of a diffusion config (EDM table 1). ``sigma_data`` is
    ``loss.sigma_data``."""

    kind: PrecondKind = "edm"
    beta_d: float = 19.9  # vp: extent of the noise schedule
    beta_min: float = 0.1  # vp: initial slope of the noise schedule
    epsilon_t: float = 1e-5  # vp: smallest t in training
    M: int = 1000  # vp / iddpm: number of DDPM time steps
    C_1: float = 0.001  # iddpm: step adjustment at low noise
    C_2: float = 0.008  # iddpm: step adjustment at high noise
    sigma_min: float | None = None  # supported range; None: ve 0.02 .. 100, edm 0 .. inf (vp/iddpm: derived)
    sigma_max: float | None = None


def vp_sigma(t, beta_d: float, beta_min: float) -> torch.Tensor:
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) of the VP SDE."""
    t = torch.as_tensor(t)
    return ((0.5 * beta_d * (t ** 2) + beta_min * t).exp() - 1).sqrt()


def vp_sigma_inv(sigma, beta_d: float, beta_min: float) -> torch.Tensor:
    """t(sigma), the inverse of :func:`vp_sigma`."""
    sigma = torch.as_tensor(sigma)
    return ((beta_min ** 2 + 2 * beta_d * (1 + sigma ** 2).log()).sqrt() - beta_min) / beta_d


def iddpm_sigmas(M: int, C_1: float, C_2: float) -> torch.Tensor:
    """The M + 1 noise levels u_0 > ... > u_M = 0 of improved DDPM's cosine schedule, with
    the per-step ratio of alpha_bar clipped to C_1 (EDM appendix C.3.4). -> float32 [M + 1]"""
    def alpha_bar(j):
        return torch.as_tensor(0.5 * math.pi * j / M / (C_2 + 1)).sin() ** 2
    u = torch.zeros(M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = ((u[j] ** 2 + 1) / (alpha_bar(j - 1) / alpha_bar(j)).clip(min=C_1) - 1).sqrt()
    return u


class Denoiser(nn.Module):
    """A preconditioned denoiser around a raw network, with the optional EDM2 uncertainty head.

    ``net(x_in [B,C,H,W], c_noise [B], labels [B,L] | None, tokens [B,T,E] | None, **extra)``
    returns F (2C channels for iDDPM: only the first C are used). ``label_dim``
    0 means unconditional; ``labels=None`` on a conditional model means "no class" (a zero
    vector: the CFG guide)."""

    def __init__(self, net: nn.Module, label_dim: int = 0, sigma_data: float = 0.5, logvar_channels: int = 128,
                 precond: PrecondConfig | None = None):
        super().__init__()
        self.net, self.label_dim, self.sigma_data = net, label_dim, sigma_data
        self.precond = p = precond or PrecondConfig()
        if logvar_channels:
            self.logvar_fourier = MPFourier(logvar_channels)
            self.logvar_linear = MPConv(logvar_channels, 1, kernel=())
        self.has_logvar = bool(logvar_channels)
        device = torch.get_default_device()
        cpu = torch.device("cpu")  # the limits are plain numbers, also when building on the meta device
        if p.kind == "vp":
            with cpu:
                self.sigma_min = float(vp_sigma(torch.tensor(p.epsilon_t), p.beta_d, p.beta_min))
                self.sigma_max = float(vp_sigma(torch.tensor(1.0), p.beta_d, p.beta_min))
        elif p.kind == "iddpm":
            with cpu:
                u = iddpm_sigmas(p.M, p.C_1, p.C_2)
            self.sigma_min, self.sigma_max = float(u[p.M - 1]), float(u[0])
            self.register_buffer("u", u.to(device))
        else:
            lo, hi = (0.02, 100.0) if p.kind == "ve" else (0.0, math.inf)
            self.sigma_min = p.sigma_min if p.sigma_min is not None else lo
            self.sigma_max = p.sigma_max if p.sigma_max is not None else hi
        if p.kind in ("vp", "iddpm") and (p.sigma_min is not None or p.sigma_max is not None):
            raise ConfigError(f"precond.sigma_min/sigma_max: the {p.kind} range follows from its schedule; leave them unset")

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) for float32 ``sigma`` of any shape (c_noise flattened)."""
        kind = self.precond.kind
        if kind == "edm":
            sd = self.sigma_data
            c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
            c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
            c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
            return c_skip, c_out, c_in, sigma.flatten().log() / 4
        if kind == "ve":
            return 1, sigma, 1, (0.5 * sigma).log().flatten()
        c_in = 1 / (sigma ** 2 + 1).sqrt()
        if kind == "vp":
            p = self.precond
            c_noise = (p.M - 1) * vp_sigma_inv(sigma, p.beta_d, p.beta_min)
        else:
            c_noise = self.precond.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        return 1, -sigma, c_in, c_noise.flatten()

    def round_sigma(self, sigma, return_index: bool = False) -> torch.Tensor:
        """The nearest supported sigma (iDDPM's discrete set; the identity otherwise), or its
        index in ``u`` with ``return_index``."""
        sigma = torch.as_tensor(sigma)
        if self.precond.kind != "iddpm":
            assert not return_index
            return sigma
        dist = (sigma.to(self.u.device, torch.float32).reshape(-1, 1) - self.u.reshape(1, -1)).abs()
        index = dist.argmin(1)
        out = index if return_index else self.u[index].to(sigma.dtype)
        return out.reshape(sigma.shape).to(sigma.device)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, return_logvar: bool = False, **extra):
        # x: [B, ...]; sigma: scalar or [B]; labels: [B] int or [B, label_dim] one-hot / weights
        dtype = x.dtype
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, *([1] * (x.ndim - 1)))
        labels = self.one_hot(labels, x.shape[0], x.device)
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        if c_noise.numel() == 1 and x.shape[0] > 1:
            c_noise = c_noise.expand(x.shape[0])
        F_x = self.net(c_in * x, c_noise, labels, tokens, **extra)
        if F_x.shape[1] != x.shape[1]:
            F_x = F_x[:, :x.shape[1]]  # iDDPM's network also outputs variances, which D does not use
        D_x = (c_skip * x + c_out * F_x.to(torch.float32)).to(dtype)
        if return_logvar:
            if not self.has_logvar:
                raise ConfigError("this network has no uncertainty head (model.logvar_channels = 0); "
                                  "set loss.uncertainty: false")
            logvar = self.logvar_linear(self.logvar_fourier(c_noise.reshape(-1)))
            return D_x, logvar.reshape(-1, *([1] * (x.ndim - 1)))
        return D_x

    def one_hot(self, labels, batch: int, device) -> torch.Tensor | None:
        if self.label_dim == 0:
            return None
        if labels is None:
            return torch.zeros(batch, self.label_dim, device=device)
        labels = torch.as_tensor(labels, device=device)
        if labels.ndim == 1 or labels.ndim == 0:
            return nn.functional.one_hot(labels.long().reshape(-1), self.label_dim).float().expand(batch, -1)
        return labels.float().reshape(-1, self.label_dim)
