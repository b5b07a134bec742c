"""EDM preconditioning, training noise and losses (METHODS.md sections 3 and 4).

``Denoiser`` wraps a raw network ``F(x_in, c_noise, labels, tokens)`` into the EDM denoiser
``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` (EDM eq. 7, table 1) and carries the
EDM2 uncertainty head ``u(sigma)`` (a Fourier embedding of c_noise -> one scalar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vidgen.nn.mp import MPConv, MPFourier


@dataclass
class LossConfig:
    """Training noise and loss (the ``loss`` section of a diffusion config)."""

    P_mean: float = -0.4  # ln sigma ~ N(P_mean, P_std^2); EDM: -1.2 / 1.2, EDM2-512: -0.4 / 1.0
    P_std: float = 1.0
    sigma_data: float = 0.5
    uncertainty: bool = True  # EDM2 learned loss weighting (logvar head)
    sigma_range: tuple[float, float] | None = None  # restrict training sigma (noise-range experts)
    label_dropout: float = 0.0  # drop the class with this probability (trains the CFG guide)


def precond_coeffs(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM table 1 for ``sigma`` of any shape."""
    s2, d2 = sigma ** 2, sigma_data ** 2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / (s2 + d2).sqrt()
    c_in = 1 / (s2 + d2).sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = 1 / c_out^2 = (sigma^2 + sd^2) / (sigma sd)^2 (EDM eq. 8)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def sample_sigma(n: int, P_mean: float, P_std: float, sigma_range: tuple[float, float] | None = None,
                 device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """ln sigma ~ N(P_mean, P_std^2), optionally truncated to ``sigma_range`` by inverse CDF
    (the training noise of an expert owning that sub-range, METHODS.md 7). -> [n]"""
    u = torch.rand(n, device=device, generator=generator, dtype=torch.float64)
    if sigma_range is not None:
        lo, hi = (0.5 * (1 + math.erf((math.log(s) - P_mean) / (P_std * math.sqrt(2)))) for s in sigma_range)
        u = lo + (hi - lo) * u
    z = math.sqrt(2) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-12, 1 - 1e-12))
    return (P_mean + P_std * z).exp().float()


class Denoiser(nn.Module):
    """EDM-preconditioned denoiser around a raw network, with the EDM2 uncertainty head.

    ``net(x_in [B,C,H,W], c_noise [B], labels [B,L] | None, tokens [B,T,E] | None, **extra)``
    returns F with the shape of x. ``label_dim`` 0 means unconditional; ``labels=None`` on a
    conditional model means "no class" (a zero vector: the CFG guide)."""

    def __init__(self, net: nn.Module, label_dim: int = 0, sigma_data: float = 0.5, logvar_channels: int = 128):
        super().__init__()
        self.net, self.label_dim, self.sigma_data = net, label_dim, sigma_data
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, kernel=())

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, return_logvar: bool = False, **extra):
        # x: [B, ...]; sigma: scalar or [B]; labels: [B] int or [B, label_dim] one-hot / weights
        dtype = x.dtype
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        labels = self.one_hot(labels, x.shape[0], x.device)
        sig = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        c_skip, c_out, c_in, c_noise = precond_coeffs(sig, self.sigma_data)
        F_x = self.net(c_in * x, c_noise.reshape(-1), labels, tokens, **extra)
        D_x = (c_skip * x + c_out * F_x.to(torch.float32)).to(dtype)
        if return_logvar:
            logvar = self.logvar_linear(self.logvar_fourier(c_noise.reshape(-1)))
            return D_x, logvar.reshape(sig.shape)
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


def edm_loss(denoiser: Denoiser, images: torch.Tensor, labels, cfg: LossConfig, tokens=None) -> torch.Tensor:
    """Per-sample EDM loss, or EDM2's uncertainty-weighted one: ``lambda/e^u ||D - y||^2 + u``
    (METHODS.md 4), averaged over pixels. images: [B, ...] -> loss [B]."""
    b = images.shape[0]
    sigma = sample_sigma(b, cfg.P_mean, cfg.P_std, cfg.sigma_range, device=images.device)
    sig = sigma.reshape(-1, *([1] * (images.ndim - 1)))
    if labels is not None and cfg.label_dropout > 0:
        labels = denoiser.one_hot(labels, b, images.device)
        keep = (torch.rand(b, 1, device=images.device) >= cfg.label_dropout).to(labels.dtype)
        labels = labels * keep
    noisy = images + torch.randn_like(images) * sig
    weight = loss_weight(sig, cfg.sigma_data)
    if cfg.uncertainty:
        D, logvar = denoiser(noisy, sigma, labels, tokens, return_logvar=True)
        per = (weight / logvar.exp()) * (D - images).square() + logvar
    else:
        D = denoiser(noisy, sigma, labels, tokens)
        per = weight * (D - images).square()
    return per.flatten(1).mean(1)
