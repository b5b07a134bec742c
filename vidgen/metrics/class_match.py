"""FID with the generated set's ImageNet top-1 class histogram matched to the real one
(Kynkaanniemi et al. 2023, "The Role of ImageNet Classes in Frechet Inception Distance",
section 4: matching Top-1 histograms).

The generated images are resampled with replacement, none changed, so that the histogram of
their Inception top-1 classes follows the real frames' (weighted) histogram: class c gets
round(n p_real(c)) draws (largest remainders) among the generated images of class c. Real
classes that no generated image has cannot be matched; their mass is left out and reported
(`matched_mass`). The FID of the resampled set is compared with the plain FID: a relative
drop of at least `flag` (10% by default) flags the FID as driven by ImageNet-class statistics
(the generated set's class proportions, not its images, account for much of the distance).
Resampling duplicates images, which by itself raises FID; a drop despite that is telling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vidgen.errors import VidgenError
from vidgen.metrics.frechet import FeatureStats, frechet_from_stats


def largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, proportional to p (Hamilton's method)."""
    exact = p / p.sum() * n
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


@dataclass
class ClassMatch:
    indices: np.ndarray        # [n] rows of the generated set, with repetitions
    matched_mass: float        # share of the real histogram's weight in classes the generated set has
    real_classes: int          # classes with real weight
    fake_classes: int          # classes among the generated images
    max_repeat: int            # most draws of one generated image


def match_histogram(fake_classes: np.ndarray, real_hist: np.ndarray, n: int, seed: int) -> ClassMatch:
    """fake_classes [m] top-1 class of each generated image; real_hist [K] weighted real
    histogram -> `n` resampled row indices whose class histogram follows real_hist."""
    fake_classes = np.asarray(fake_classes, np.int64)
    real_hist = np.asarray(real_hist, np.float64)
    present = np.bincount(fake_classes, minlength=len(real_hist)) > 0
    p = np.where(present, real_hist, 0.0)
    if p.sum() <= 0:
        raise VidgenError("fid_class_matched: no generated image has the top-1 class of any real frame, "
                          "so the class histograms cannot be matched")
    counts = largest_remainder(p, n)
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(fake_classes == c), size=k, replace=True)
            for c, k in enumerate(counts) if k > 0]
    idx = np.sort(np.concatenate(rows))
    return ClassMatch(idx, float(p.sum() / real_hist.sum()), int((real_hist > 0).sum()), int(present.sum()),
                      int(np.bincount(idx).max()))


def stats_of_rows(feats: torch.Tensor, idx: np.ndarray, device: torch.device | str = "cpu",
                  chunk: int = 4096) -> FeatureStats:
    """Statistics of the resampled set feats[idx] (each draw one sample), summed on `device`."""
    stats = FeatureStats(feats.shape[1], device=device)
    for a in range(0, len(idx), chunk):
        stats.add(feats[torch.from_numpy(idx[a:a + chunk])].to(device))
    return stats


def class_matched_fid(real: FeatureStats, feats: torch.Tensor, classes: np.ndarray, seed: int,
                      unbiased: bool = False) -> tuple[float, ClassMatch]:
    """(FID of the class-matched resample of the generated features [n, D], the match)."""
    hist = real.meta.get("class_hist")
    if hist is None:
        raise VidgenError("fid_class_matched: the real statistics carry no class histogram "
                          "(the detector is not a classifier)")
    match = match_histogram(classes, np.asarray(hist), len(feats), seed)
    return frechet_from_stats(real, stats_of_rows(feats, match.indices, real.device), unbiased=unbiased), match
