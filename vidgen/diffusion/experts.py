"""Noise-range experts and paint-with-words (eDiff-I, docs/METHODS.md section 7).

Experts: one denoiser is trained on all noise levels, then split (binary splits) into copies
that each own a sub-range of sigma and are fine-tuned on it (training noise truncated to the
range: ``LossConfig.sigma_range``, or :func:`finetune_expert`). At sampling, every network
evaluation is routed to the single expert owning its sigma: the cost per step is unchanged.

Paint-with-words: the cross-attention logits of pixels in the region a user painted for a
token get the bias ``W = w' log(1 + sigma) max(Q K^T) A`` (A: pixels x tokens mask), so the
attention is ``softmax((Q K^T + W) / sqrt(d)) V``: strong at high noise, weak at low noise.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.diffusion.edm import LossConfig, edm_loss
from vidgen.errors import ConfigError


def expert_ranges(boundaries: list[float]) -> list[tuple[float, float]]:
    """Split points (ascending) -> the (lo, hi] sigma range of each expert, low noise first."""
    edges = [0.0, *boundaries, math.inf]
    if any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise ConfigError(f"expert boundaries must be positive and ascending; got {boundaries}")
    return list(zip(edges[:-1], edges[1:]))


class ExpertDenoiser(nn.Module):
    """Routes each call to the expert whose (lo, hi] range holds sigma; a per-sample sigma is
    routed per sample. Same call signature as :class:`vidgen.diffusion.edm.Denoiser`."""

    def __init__(self, experts: list[nn.Module], boundaries: list[float]):
        super().__init__()
        self.ranges = expert_ranges(list(boundaries))
        if len(experts) != len(self.ranges):
            raise ConfigError(f"{len(boundaries)} boundaries need {len(self.ranges)} experts; got {len(experts)}")
        self.experts = nn.ModuleList(experts)
        self.boundaries = list(boundaries)
        self.calls = [0] * len(experts)

    def index(self, sigma: torch.Tensor) -> torch.Tensor:
        """Expert number of each sigma ([B] -> [B]): bucketize with right-closed ranges."""
        return torch.bucketize(sigma, torch.tensor(self.boundaries, dtype=sigma.dtype, device=sigma.device), right=False)

    def forward(self, x, sigma, labels=None, tokens=None, **extra):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        idx = self.index(sigma)
        if sigma.numel() == 1 or bool((idx == idx[0]).all()):
            self.calls[int(idx[0])] += 1
            return self.experts[int(idx[0])](x, sigma, labels, tokens, **extra)
        out = torch.empty_like(x)
        for e in idx.unique().tolist():
            m = idx == e
            sel = lambda v: v[m] if torch.is_tensor(v) and v.shape[:1] == m.shape else v
            self.calls[e] += 1
            out[m] = self.experts[e](x[m], sigma[m], sel(labels), sel(tokens), **extra)
        return out


def split_experts(denoiser: nn.Module, boundaries: list[float]) -> ExpertDenoiser:
    """Copies of one trained denoiser, one per range (each then fine-tuned on its range)."""
    return ExpertDenoiser([copy.deepcopy(denoiser) for _ in expert_ranges(list(boundaries))], boundaries)


def finetune_expert(expert: nn.Module, batches, sigma_range: tuple[float, float], loss_cfg: LossConfig,
                    steps: int, lr: float = 1e-4) -> list[float]:
    """Fine-tune one expert on its sub-range: the parent's noise distribution truncated to
    ``sigma_range`` (infinite ends are clipped to 1e-4 / 1e4). ``batches`` yields
    (images, labels). -> per-step losses. The train CLI does the same through the engine with
    ``--init CKPT --set loss.sigma_range=[lo,hi]``."""
    lo, hi = max(sigma_range[0], 1e-4), min(sigma_range[1], 1e4)
    cfg = replace(loss_cfg, sigma_range=(lo, hi))
    expert.train()
    opt = torch.optim.Adam([p for p in expert.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99))
    losses = []
    for _, (images, labels) in zip(range(steps), batches):
        loss = edm_loss(expert, images, labels, cfg).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    expert.eval()
    return losses


@dataclass
class PaintWithWords:
    """Painted regions for the tokens of a prompt: ``masks`` [B, T, H, W] in [0, 1] (any
    resolution; resized to each attention layer's), ``weight`` is w'."""

    masks: torch.Tensor
    weight: float = 1.0

    def bias(self, q: torch.Tensor, k: torch.Tensor, sigma: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """q: [B, n, HW, d], k: [B, n, T, d], sigma: [B] -> additive bias on the *scaled* logits
        [B, n, HW, T], i.e. W / sqrt(d) so that softmax(QK^T/sqrt(d) + bias) = softmax((QK^T + W)/sqrt(d))."""
        if self.masks.shape[1] != k.shape[2]:
            raise ConfigError(f"paint-with-words: {self.masks.shape[1]} masks for {k.shape[2]} tokens; give one per token")
        a = F.interpolate(self.masks.to(q.dtype), size=hw, mode="bilinear", align_corners=False)
        a = rearrange(a, "b t h w -> b 1 (h w) t")
        qk_max = torch.einsum("bnqd,bnkd->bnqk", q, k).amax(dim=(2, 3), keepdim=True)  # max(QK^T)
        strength = self.weight * torch.log1p(sigma.to(q.dtype)).reshape(-1, 1, 1, 1)
        return strength * qk_max * a / math.sqrt(q.shape[-1])
