"""Variance ratios and equal-time FID of a time-lapse generator (docs/METHODS.md section 2,
"Evaluation").

Variance ratios (Haerkoenen et al. 2022, appendix): for an input X (z, the noise maps, t as a
whole, or the t of one factor) the expected output variance due to X is estimated per pixel
from pairs of images that differ only in X: ``E[Var_X G] = E[(G(X1) - G(X2))^2] / 2``. The
shares are averaged over pixels: ``{z, noise, t}`` relative to their sum, and
``{trend, year, day}`` relative to the sum of z, noise and the three factor terms.
t is drawn uniformly in [0, 1] unless times are given (e.g. the dataset's own).
"""

from __future__ import annotations

import numpy as np
import torch

from timelapse.model import Generator


@torch.no_grad()
def _pair_variance(G: Generator, target: str, n: int, batch: int, gen: torch.Generator,
                   t_pool: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel E[Var_target G] over ``n`` pairs -> [C, h, w] (valid rectangle only)."""
    dev = G.w_avg.device
    F_ = len(G.axis.factors)
    x0, y0, x1, y1 = (int(v) for v in G.out_rect)

    def rand_t(b):
        if t_pool is None:
            return torch.rand(b, generator=gen)
        return t_pool[torch.randint(len(t_pool), (b,), generator=gen)]

    acc, done = None, 0
    while done < n:
        b = min(batch, n - done)
        z1 = torch.randn(b, G.cfg.z_dim, generator=gen)
        t1 = rand_t(b)[:, None].repeat(1, F_)
        n1 = G.make_noise(b, gen)
        z2, t2, n2 = z1, t1.clone(), n1
        if target == "z":
            z2 = torch.randn(b, G.cfg.z_dim, generator=gen)
        elif target == "noise":
            n2 = G.make_noise(b, gen)
        elif target == "t":
            t2 = rand_t(b)[:, None].repeat(1, F_)
        else:  # one factor's t moves, the others stay
            t2[:, G.axis.factors.index(target)] = rand_t(b)
        i1 = G(z1.to(dev), t1.to(dev), noise=[x.to(dev) for x in n1])[..., y0:y1, x0:x1]
        i2 = G(z2.to(dev), t2.to(dev), noise=[x.to(dev) for x in n2])[..., y0:y1, x0:x1]
        s = (i1 - i2).float().square().sum(0) / 2
        acc = s if acc is None else acc + s
        done += b
    return acc / n


def variance_ratios(G: Generator, n: int = 256, batch: int = 16, seed: int = 0,
                    times: np.ndarray | None = None) -> dict[str, float]:
    """Shares of output variance due to z, noise, t, and each factor's t (trend/year/day).

    ``times``: normalised times to draw t from (default uniform in [0, 1]). Factors the
    sequence does not have (no yearly term under a year) are reported as 0.
    """
    gen = torch.Generator().manual_seed(seed)
    pool = None if times is None else torch.as_tensor(np.asarray(times), dtype=torch.float32)
    G = G.eval()
    var = {k: _pair_variance(G, k, n, batch, gen, pool) for k in ("z", "noise", "t", *G.axis.factors)}
    total1 = (var["z"] + var["noise"] + var["t"]).clamp_min(1e-3)
    out = {k: float((var[k] / total1).mean()) for k in ("z", "noise", "t")}
    total2 = (var["z"] + var["noise"] + sum(var[f] for f in G.axis.factors)).clamp_min(1e-3)
    for f in ("trend", "year", "day"):
        out[f] = float((var[f] / total2).mean()) if f in var else 0.0
    return out


@torch.no_grad()
def fid(G: Generator, frames, detector=None, num_fake: int = 10000, batch: int = 32, seed: int = 0,
        progress: bool = True) -> dict:
    """FID between the real frames and generated ones whose t are drawn from the dataset's own
    capture times (equal-time FID). ``frames``: items ``(frame [C, R, R], t, ...)`` (e.g.
    TimelapseFrames); ``detector``: a ``vidgen.metrics`` detector (default: Inception)."""
    from vidgen.metrics.detectors import load_detector
    from vidgen.metrics.frechet import FeatureStats, frechet_from_stats
    from vidgen.render.writer import to_uint8_frames

    det = detector or load_detector("inception", device=G.w_avg.device)
    x0, y0, x1, y1 = (int(v) for v in G.out_rect)
    real = FeatureStats(det.feature_dim)
    ts = []
    for a in range(0, len(frames), batch):
        items = [frames[i] for i in range(a, min(a + batch, len(frames)))]
        imgs = torch.stack([it[0] for it in items])[..., y0:y1, x0:x1]
        ts += [float(it[1]) for it in items]
        real.add(det(torch.from_numpy(to_uint8_frames(imgs, layout="TCHW")).permute(0, 3, 1, 2).contiguous()))
    gen = torch.Generator().manual_seed(seed)
    pool = torch.tensor(ts)
    fake = FeatureStats(det.feature_dim)
    dev = G.w_avg.device
    for a in range(0, num_fake, batch):
        b = min(batch, num_fake - a)
        z = torch.randn(b, G.cfg.z_dim, generator=gen).to(dev)
        t = pool[torch.randint(len(pool), (b,), generator=gen)].to(dev)
        img = G(z, t)[..., y0:y1, x0:x1]
        fake.add(det(torch.from_numpy(to_uint8_frames(img, layout="TCHW")).permute(0, 3, 1, 2).contiguous()))
    return {"fid": frechet_from_stats(real, fake), "num_real": len(frames), "num_fake": num_fake,
            "detector": det.name, "detector_sha256": det.sha256, "t_from": "dataset capture times"}
