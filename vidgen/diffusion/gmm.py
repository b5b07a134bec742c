"""Gaussian mixtures with exact densities and exact denoisers.

For data x0 ~ sum_k w_k N(mu_k, C_k) and x = x0 + sigma n, the ideal denoiser is the
posterior mean ``E[x0 | x] = sum_k r_k(x) (mu_k + C_k (C_k + sigma^2 I)^-1 (x - mu_k))`` with
responsibilities ``r_k`` under the noisy components ``N(mu_k, C_k + sigma^2 I)``. It is what a
perfectly trained network computes; the samplers are tested against it and the 2-D toy
measures likelihood and coverage with the exact density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixture:
    means: torch.Tensor  # [K, D]
    covs: torch.Tensor  # [K, D, D]
    weights: torch.Tensor  # [K], sums to 1

    @staticmethod
    def gaussian(mean, cov) -> "GaussianMixture":
        mean = torch.as_tensor(mean, dtype=torch.float64)
        return GaussianMixture(mean[None], torch.as_tensor(cov, dtype=torch.float64)[None], torch.ones(1, dtype=torch.float64))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def subset(self, mask: torch.Tensor) -> "GaussianMixture":
        w = self.weights[mask]
        return GaussianMixture(self.means[mask], self.covs[mask], w / w.sum())

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def cov(self) -> torch.Tensor:
        mu = self.mean()
        d = self.means - mu
        second = self.covs + torch.einsum("ki,kj->kij", d, d)
        return (self.weights[:, None, None] * second).sum(0)

    def sample(self, n: int, generator: torch.Generator | None = None, return_index: bool = False):
        """n draws -> [n, D] (and the component index of each, [n], with ``return_index``)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        x = self.means[k] + torch.einsum("nij,nj->ni", chol[k], z)
        return (x, k) if return_index else x

    def _noisy_logpdf(self, x: torch.Tensor, sigma: float):
        # x: [N, D] -> log w_k N(x; mu_k, C_k + sigma^2 I): [N, K], and (C_k + sigma^2 I)^-1 (x - mu_k)
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=x.device)
        cov = self.covs.to(x.device) + sigma ** 2 * eye  # [K, D, D], inverted once per call
        inv = torch.linalg.inv(cov)
        diff = x[:, None, :] - self.means.to(x.device)[None]  # [N, K, D]
        inv_diff = torch.einsum("kij,nkj->nki", inv, diff)
        maha = (diff * inv_diff).sum(-1)
        logdet = torch.linalg.slogdet(cov)[1]
        logp = -0.5 * (maha + logdet[None] + self.dim * math.log(2 * math.pi))
        return logp + self.weights.to(x.device).log()[None], inv_diff, diff

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """log density of x (of the data convolved with N(0, sigma^2 I)). x: [N, D] -> [N]"""
        x = x.to(self.means.dtype)
        return torch.logsumexp(self._noisy_logpdf(x, sigma)[0], dim=1)

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Exact posterior mean E[x0 | x; sigma]. x: [N, D] -> [N, D] in x's dtype."""
        xd = x.to(self.means.dtype)
        logp, inv_diff, diff = self._noisy_logpdf(xd, float(sigma))
        r = torch.softmax(logp, dim=1)  # [N, K]
        # C_k (C_k + s^2 I)^-1 (x - mu_k) = x - mu_k - s^2 (C_k + s^2 I)^-1 (x - mu_k)
        post = self.means[None] + diff - float(sigma) ** 2 * inv_diff
        return (r[..., None] * post).sum(1).to(x.dtype)
