"""Feature statistics and the distances built on them (docs/METHODS.md section 9).

`FeatureStats` streams features in: float64 weighted sums of x and x x^T (memory independent
of the number of samples), plus an optional capped, weighted reservoir of raw features for
the metrics that need samples (KID, precision/recall). Stats from several processes merge
exactly (`merge`, `all_reduce`) and round-trip through safetensors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from safetensors.torch import load_file

from vidgen.fileio import write_safetensors
from vidgen.errors import VidgenError


class FeatureStats:
    """Streaming weighted mean / covariance of D-dimensional features.

    mean = sum_i w_i x_i / W,  cov = sum_i w_i x_i x_i^T / W - mean mean^T   (W = sum_i w_i),
    the maximum-likelihood (1/W) estimate, accumulated in float64. ``mean_cov(unbiased=True)``
    scales it by n / (n - 1) with n = W^2 / sum_i w_i^2 (Kish's effective sample size; n is the
    sample count when the weights are equal, giving numpy's ``np.cov``).

    `reservoir` > 0 also keeps at most that many raw features, drawn with probability
    proportional to their weight (Efraimidis-Spirakis A-Res: keep the largest keys
    log(u) / w). Keys travel with the features, so merged reservoirs are again exact
    weighted samples of the union.
    """

    def __init__(self, dim: int, reservoir: int = 0, seed: int = 0, device: torch.device | str = "cpu"):
        assert dim > 0 and reservoir >= 0
        self.dim, self.reservoir, self.seed = int(dim), int(reservoir), int(seed)
        self.device = torch.device(device)
        f64 = dict(dtype=torch.float64, device=self.device)
        self.num_items = 0                                   # samples seen (unweighted count)
        self.weight = torch.zeros((), **f64)                 # W
        self.weight_sq = torch.zeros((), **f64)              # sum_i w_i^2
        self.sum = torch.zeros(self.dim, **f64)              # sum_i w_i x_i      : [D]
        self.sum_outer = torch.zeros(self.dim, self.dim, **f64)  # sum_i w_i x x^T  : [D, D]
        self.res_feat = torch.zeros(0, self.dim, dtype=torch.float32, device=self.device)
        self.res_key = torch.zeros(0, **f64)
        self._gen = torch.Generator(device="cpu").manual_seed(self.seed)
        self.meta: dict = {}  # JSON-able provenance stored with `save`

    # ------------------------------------------------------------------ accumulation
    def add(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """x: [B, D] features; weights: [B] non-negative (default 1)."""
        assert x.ndim == 2 and x.shape[1] == self.dim, f"expected [B, {self.dim}], got {list(x.shape)}"
        x64 = x.detach().to(self.device, torch.float64)
        w = torch.ones(len(x64), dtype=torch.float64, device=self.device) if weights is None \
            else weights.detach().to(self.device, torch.float64).reshape(-1)
        assert len(w) == len(x64) and bool((w >= 0).all())
        self.num_items += len(x64)
        self.weight += w.sum()
        self.weight_sq += w.square().sum()
        self.sum += w @ x64
        self.sum_outer += (x64 * w[:, None]).T @ x64
        if self.reservoir:
            u = torch.rand(len(x64), generator=self._gen, dtype=torch.float64).to(self.device)
            key = torch.log(u.clamp_min(1e-300)) / w.clamp_min(1e-300)
            self._keep(torch.cat([self.res_feat, x.detach().to(self.device, torch.float32)]),
                       torch.cat([self.res_key, key]))

    def _keep(self, feat: torch.Tensor, key: torch.Tensor) -> None:
        if len(key) > self.reservoir:
            top = torch.topk(key, self.reservoir).indices
            feat, key = feat[top], key[top]
        self.res_feat, self.res_key = feat, key

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another process's statistics into this one (exact)."""
        assert other.dim == self.dim and other.reservoir == self.reservoir
        self.num_items += other.num_items
        self.weight += other.weight.to(self.device)
        self.weight_sq += other.weight_sq.to(self.device)
        self.sum += other.sum.to(self.device)
        self.sum_outer += other.sum_outer.to(self.device)
        if self.reservoir:
            self._keep(torch.cat([self.res_feat, other.res_feat.to(self.device)]),
                       torch.cat([self.res_key, other.res_key.to(self.device)]))
        return self

    def all_reduce(self, group=None) -> "FeatureStats":
        """Sum statistics over all torch.distributed ranks; every rank ends with the total."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        count = torch.tensor([float(self.num_items)], dtype=torch.float64, device=self.device)
        for t in (count, self.weight, self.weight_sq, self.sum, self.sum_outer):
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        self.num_items = int(round(count.item()))
        if self.reservoir:  # pad to the cap so every rank sends the same shape
            n = len(self.res_key)
            feat = torch.zeros(self.reservoir, self.dim, dtype=torch.float32, device=self.device)
            key = torch.full((self.reservoir,), -math.inf, dtype=torch.float64, device=self.device)
            feat[:n], key[:n] = self.res_feat, self.res_key
            world = dist.get_world_size(group)
            feats = [torch.empty_like(feat) for _ in range(world)]
            keys = [torch.empty_like(key) for _ in range(world)]
            dist.all_gather(feats, feat, group=group)
            dist.all_gather(keys, key, group=group)
            feat, key = torch.cat(feats), torch.cat(keys)
            valid = torch.isfinite(key)
            self._keep(feat[valid], key[valid])
        return self

    # ------------------------------------------------------------------ results
    def effective_count(self) -> float:
        """Kish's effective sample size W^2 / sum_i w_i^2 (the count, for equal weights)."""
        return float(self.weight) ** 2 / max(float(self.weight_sq), 1e-300)

    def mean_cov(self, unbiased: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean [D], cov [D, D]) as float64 numpy arrays; ``unbiased``: cov * n / (n - 1)."""
        if self.num_items == 0 or float(self.weight) <= 0:
            raise VidgenError("no features were accumulated: the sample set is empty")
        mean = self.sum / self.weight
        cov = self.sum_outer / self.weight - torch.outer(mean, mean)
        if unbiased:
            n = self.effective_count()
            if n <= 1:
                raise VidgenError("an unbiased covariance needs more than one sample")
            cov = cov * (n / (n - 1))
        return mean.cpu().numpy(), cov.cpu().numpy()

    def features(self) -> np.ndarray:
        """The reservoir of raw features: [min(num_items, reservoir), D] float32."""
        assert self.reservoir, "this FeatureStats keeps no raw features (reservoir=0)"
        return self.res_feat.cpu().numpy()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.cpu().reshape(1), "weight_sq": self.weight_sq.cpu().reshape(1),
                "sum": self.sum.cpu(),
                "sum_outer": self.sum_outer.cpu(), "res_feat": self.res_feat.cpu(),
                "res_key": self.res_key.cpu()}

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write safetensors atomically; `meta` (JSON-able) is stored in the header."""
        info = {"dim": self.dim, "reservoir": self.reservoir, "seed": self.seed,
                "num_items": self.num_items, "meta": self.meta if meta is None else meta}
        write_safetensors(path, self.state_dict(), {"vidgen_feature_stats": json.dumps(info)})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "FeatureStats":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                info = json.loads((f.metadata() or {})["vidgen_feature_stats"])
            tensors = load_file(str(path))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise VidgenError(f"{path}: not a feature-statistics file ({exc}); delete it to recompute") from exc
        stats = cls(info["dim"], info["reservoir"], info["seed"], device)
        stats.num_items = int(info["num_items"])
        stats.weight = tensors["weight"].to(stats.device).reshape(())
        if "weight_sq" not in tensors:
            raise VidgenError(f"{path}: feature statistics from an older vidgen (no weight_sq); delete it to recompute")
        stats.weight_sq = tensors["weight_sq"].to(stats.device).reshape(())
        stats.sum = tensors["sum"].to(stats.device)
        stats.sum_outer = tensors["sum_outer"].to(stats.device)
        stats.res_feat = tensors["res_feat"].to(stats.device)
        stats.res_key = tensors["res_key"].to(stats.device)
        stats.meta = info.get("meta", {})
        return stats


# ---------------------------------------------------------------------- distances
def _sqrtm(a: np.ndarray) -> np.ndarray:
    out = scipy.linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "sqrtm") -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))  (docs/METHODS.md section 9).

    method "sqrtm": scipy's matrix square root of S1 S2, real part (the reference
    computation); "eigen": Tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))), which is
    exactly symmetric and never complex.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and s1.shape == s2.shape == (len(mu1), len(mu1))
    diff = float(np.square(mu1 - mu2).sum())
    if method == "sqrtm":
        covmean = _sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():  # singular product: offset the diagonals slightly
            eps = 1e-6 * np.eye(len(s1))
            covmean = _sqrtm((s1 + eps) @ (s2 + eps))
        tr_covmean = float(np.real(np.trace(covmean)))
    elif method == "eigen":
        w, v = np.linalg.eigh((s1 + s1.T) / 2)
        root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = root1 @ s2 @ root1
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    else:
        raise ValueError(f"unknown Frechet method {method!r} (use 'sqrtm' or 'eigen')")
    return float(diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def frechet_from_stats(a: FeatureStats, b: FeatureStats, method: str = "sqrtm",
                       unbiased: bool = False) -> float:
    """Frechet distance of two feature sets; ``unbiased`` uses n - 1 covariances (TTUR,
    pytorch-fid, torch-fidelity, EDM, EDM2), else 1 / n (StyleGAN2-ADA / StyleGAN3 /
    StyleGAN-V / long-video-GAN metric code)."""
    return frechet_distance(*a.mean_cov(unbiased), *b.mean_cov(unbiased), method=method)


@dataclass
class KIDResult:
    value: float
    std: float
    subset_size: int
    num_subsets: int


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> KIDResult:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / D + 1)^3
    (Binkowski et al. 2018), averaged over random subsets of size m.

    x: [N, D], y: [M, D] features.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert x.ndim == y.ndim == 2 and x.shape[1] == y.shape[1]
    d = x.shape[1]
    m = min(len(x), len(y), max_subset_size)
    if m < 2:
        raise VidgenError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.sum() / (m * m))
    values = np.asarray(values)
    return KIDResult(float(values.mean()), float(values.std()), m, num_subsets)


@dataclass
class PRResult:
    precision: float
    recall: float
    k: int


def _kth_radii(feat: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest neighbour in the same set (self excluded)."""
    radii = []
    for i in range(0, len(feat), batch):
        d = torch.cdist(feat[i:i + batch], feat)         # [b, N]
        radii.append(d.kthvalue(k + 1, dim=1).values)    # +1: the zero distance to itself
    return torch.cat(radii)


def _coverage(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, batch: int) -> float:
    """Fraction of `query` rows inside at least one ref ball ||q - r|| <= radius_r."""
    inside = []
    for i in range(0, len(query), batch):
        d = torch.cdist(query[i:i + batch], ref)         # [b, M]
        inside.append((d <= radii[None]).any(dim=1))
    return float(torch.cat(inside).float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch: int = 1024) -> PRResult:
    """Improved precision / recall (Kynkaanniemi et al. 2019): k-NN manifolds, k = 3.

    precision: share of fake samples inside the real manifold; recall: share of real samples
    inside the fake manifold. Distances are computed in row batches: memory O(batch * N).
    """
    r = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    if min(len(r), len(f)) <= k:
        raise VidgenError(f"precision/recall with k={k} needs more than {k} samples per set, "
                          f"got {len(r)} real and {len(f)} generated")
    precision = _coverage(f, r, _kth_radii(r, k, batch), batch)
    recall = _coverage(r, f, _kth_radii(f, k, batch), batch)
    return PRResult(precision, recall, k)
