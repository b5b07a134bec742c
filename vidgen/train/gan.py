"""GAN losses and regularisers shared by the GAN families (long-video GAN, time-lapse GAN).

- Non-saturating logistic loss (Goodfellow et al. 2014, as used by StyleGAN2 and the
  long-video GAN, docs/METHODS.md 1.5): ``L_G = softplus(-D(G(z)))``,
  ``L_D = softplus(D(G(z))) + softplus(-D(x))``.
- R1 (Mescheder et al. 2018): ``||grad_x D(x)||^2`` on real inputs, summed over every input
  dimension of one sample; the caller multiplies by ``gamma / 2``.
- Path-length regularisation (StyleGAN2, Karras et al. 2020, eq. 4):
  ``(||J_w^T y||_2 - a)^2`` with ``y`` unit Gaussian images scaled by ``1/sqrt(H W)`` and ``a``
  an exponential moving average (decay 0.01) of the path lengths seen so far.

The functions return per-sample losses ``[B]`` so a recipe can weight or mask them before
taking the mean; the engine only needs a scalar.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.nn.stats import register_statistic


def ns_loss_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``softplus(-D(G(z)))`` per sample. fake_logits: [B] or [B, 1] -> [B]."""
    return F.softplus(-fake_logits.reshape(fake_logits.shape[0], -1).sum(1))


def ns_loss_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``softplus(D(G(z))) + softplus(-D(x))`` per sample -> [B].

    real_logits: [B] or [B, 1]; fake_logits: same batch size.
    """
    real = real_logits.reshape(real_logits.shape[0], -1).sum(1)
    fake = fake_logits.reshape(fake_logits.shape[0], -1).sum(1)
    return F.softplus(fake) + F.softplus(-real)


def r1_penalty(real_logits: torch.Tensor, real_inputs: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty ``||d D(x) / d x||^2`` per sample -> [B].

    real_logits: [B] or [B, 1], computed from ``real_inputs`` (any shape ``[B, ...]``, with
    ``requires_grad=True``). The graph is kept (``create_graph``) so the penalty itself can be
    back-propagated into the discriminator's weights. Multiply by ``gamma / 2`` for the loss.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.float().square().reshape(grad.shape[0], -1).sum(1)


class PathLengthRegularizer(nn.Module):
    """StyleGAN2 path-length penalty with a running target ``pl_mean``.

    Call with generated images ``fake: [B, C, H, W]`` (or ``[B, C, T, H, W]``) and the ``ws``
    they were made from (any shape ``[B, ...]``, ``requires_grad=True``). Returns the
    per-sample penalty ``(|J_w^T y| - pl_mean)^2`` -> [B]; multiply by ``pl_weight`` for the loss.
    ``pl_mean`` is a running statistic (vidgen/nn/stats.py; save it with the recipe's state):
    each call moves it towards the mean path length of its own batch and measures the penalty
    against the moved value, as StyleGAN2 does on each GPU; the training engine then averages
    the moves of all ranks and accumulation rounds (vidgen/train/sync.py), so every rank keeps
    the same target (give the regulariser to the engine in ``Recipe.statistics()``).
    """

    def __init__(self, decay: float = 0.01):
        super().__init__()
        self.decay = decay
        register_statistic(self, "pl_mean", torch.zeros([]))

    def forward(self, fake: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        # y ~ N(0, I) / sqrt(number of pixels): the path length does not depend on resolution.
        pixels = math.prod(fake.shape[-2:])
        noise = torch.randn_like(fake) / math.sqrt(pixels)
        (grad,) = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
        # Length over every dimension but the batch; for ws [B, L, D] StyleGAN2 takes the norm
        # over D and the mean over the L layers.
        sq = grad.float().square()
        if sq.ndim >= 3:
            lengths = sq.sum(-1).mean(tuple(range(1, sq.ndim - 1))).sqrt()
        else:
            lengths = sq.reshape(sq.shape[0], -1).sum(1).sqrt()
        mean_now = lengths.detach().mean()
        with torch.no_grad():
            self.pl_mean.copy_(self.pl_mean.lerp(mean_now.to(self.pl_mean.dtype), self.decay))
        return (lengths - self.pl_mean.detach()).square()
