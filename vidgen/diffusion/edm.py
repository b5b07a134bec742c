"""Training noise and losses of the four preconditionings (EDM table 1; docs/METHODS.md sections
3 and 4), and EDM2's uncertainty-weighted loss.

| precond | training sigma | loss weight lambda(sigma) |
|---|---|---|
| ``edm`` | ln sigma ~ N(P_mean, P_std^2) | (sigma^2 + sd^2) / (sigma sd)^2 |
| ``vp`` | sigma(t), t ~ U(epsilon_t, 1) | 1 / sigma^2 |
| ``ve`` | sigma_min (sigma_max / sigma_min)^u, u ~ U(0, 1) | 1 / sigma^2 |
| ``iddpm`` | u_j, j ~ U{0, ..., M - 1} | 1 / sigma^2 |

The preconditioned denoiser itself (:class:`Denoiser`) lives in ``precond.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidgen.diffusion.precond import Denoiser, vp_sigma  # noqa: F401  (Denoiser: the public name here too)
from vidgen.errors import ConfigError


@dataclass
class LossConfig:
    """Training noise and loss (the ``loss`` section of a diffusion config)."""

    P_mean: float = -0.4  # edm: ln sigma ~ N(P_mean, P_std^2); EDM: -1.2 / 1.2, EDM2-512: -0.4 / 1.0
    P_std: float = 1.0
    sigma_data: float = 0.5
    uncertainty: bool = True  # EDM2 learned loss weighting (needs model.logvar_channels > 0)
    sigma_range: tuple[float, float] | None = None  # restrict training sigma (noise-range experts; edm only)
    label_dropout: float = 0.0  # drop the class with this probability (trains the CFG guide)


def precond_coeffs(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM's own preconditioning for ``sigma`` of any shape."""
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
    (the training noise of an expert owning that sub-range, docs/METHODS.md 7). -> [n]"""
    u = torch.rand(n, device=device, generator=generator, dtype=torch.float64)
    if sigma_range is not None:
        lo, hi = (0.5 * (1 + math.erf((math.log(s) - P_mean) / (P_std * math.sqrt(2)))) for s in sigma_range)
        u = lo + (hi - lo) * u
    z = math.sqrt(2) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-12, 1 - 1e-12))
    return (P_mean + P_std * z).exp().float()


def training_sigma(denoiser: Denoiser, n: int, cfg: LossConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training noise levels and loss weights of ``denoiser``'s preconditioning. -> ([n], [n])"""
    p = denoiser.precond
    if cfg.sigma_range is not None and p.kind != "edm":
        raise ConfigError(f"loss.sigma_range needs precond.kind 'edm' (log-normal noise); this run uses {p.kind!r}")
    if p.kind == "edm":
        sigma = sample_sigma(n, cfg.P_mean, cfg.P_std, cfg.sigma_range, device=device)
        return sigma, loss_weight(sigma, cfg.sigma_data)
    u = torch.rand(n, device=device)
    if p.kind == "vp":
        sigma = vp_sigma(1 + u * (p.epsilon_t - 1), p.beta_d, p.beta_min)
    elif p.kind == "ve":
        sigma = denoiser.sigma_min * ((denoiser.sigma_max / denoiser.sigma_min) ** u)
    else:
        sigma = denoiser.u[torch.randint(p.M, (n,), device=device)]
    return sigma, 1 / sigma ** 2


def edm_loss(denoiser: Denoiser, images: torch.Tensor, labels, cfg: LossConfig, tokens=None) -> torch.Tensor:
    """Per-sample loss ``lambda(sigma) ||D - y||^2``, or EDM2's uncertainty-weighted one
    ``lambda/e^u ||D - y||^2 + u`` (docs/METHODS.md 4), averaged over pixels. images: [B, ...] -> [B]"""
    b = images.shape[0]
    sigma, weight = training_sigma(denoiser, b, cfg, device=images.device)
    sig = sigma.reshape(-1, *([1] * (images.ndim - 1)))
    weight = weight.reshape(sig.shape)
    if labels is not None and cfg.label_dropout > 0:
        labels = denoiser.one_hot(labels, b, images.device)
        keep = (torch.rand(b, 1, device=images.device) >= cfg.label_dropout).to(labels.dtype)
        labels = labels * keep
    noisy = images + torch.randn_like(images) * sig
    if cfg.uncertainty:
        D, logvar = denoiser(noisy, sigma, labels, tokens, return_logvar=True)
        per = (weight / logvar.exp()) * (D - images).square() + logvar
    else:
        D = denoiser(noisy, sigma, labels, tokens)
        per = weight * (D - images).square()
    return per.flatten(1).mean(1)
