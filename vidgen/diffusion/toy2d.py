"""The 2-D toy of autoguidance (docs/METHODS.md section 5): two classes, each a fractal-like tree
of thin branches made of elongated Gaussians, so the true density, its log-likelihood and the
ideal denoiser are exact. Tiny MLP denoisers (a main model trained with class dropout, and a
smaller, shorter-trained guide with the same conditioning) show the effect of no guidance,
CFG and autoguidance on sample quality (log-likelihood under the true class density) and
variety (the fraction of the true mass covered by the samples, k-NN recall with k = 3).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidgen.fileio import write_json
from vidgen.diffusion.edm import Denoiser, LossConfig, edm_loss
from vidgen.diffusion.gmm import GaussianMixture
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, sample
from vidgen.nn.mp import MPFourier


@dataclass
class ToyConfig:
    seed: int = 0
    depth: int = 6  # branching levels of each class tree
    main_hidden: int = 64
    main_layers: int = 4
    main_iters: int = 4000
    guide_hidden: int = 32
    guide_layers: int = 3
    guide_iters: int = 500
    batch: int = 2048
    lr: float = 0.01
    label_dropout: float = 0.1  # lets the main model also serve as the CFG guide
    guidance: float = 2.0
    coverage_radius: float = 0.05  # true mass within this distance of a sample counts as covered
    steps: int = 32
    samples: int = 2048  # per class, per method
    P_mean: float = -2.0
    P_std: float = 1.5


# --- the true distribution -------------------------------------------------------------------
def make_toy(depth: int = 6, seed: int = 0) -> tuple[GaussianMixture, torch.Tensor]:
    """Two class trees growing from a shared trunk (class 0 to the left, class 1 to the right).
    Every branch is 4 thin Gaussians along it; children are shorter, turn by about +-30 deg,
    and carry less mass. -> (mixture, class of each component [K])."""
    rng = np.random.default_rng(seed)
    means, covs, weights, classes = [], [], [], []

    def branch(cls, p, angle, length, level):
        direction = np.array([math.cos(angle), math.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        rot = np.stack([direction, normal], axis=1)
        for j in range(4):
            means.append(p + direction * length * (j + 0.5) / 4)
            covs.append(rot @ np.diag([(length / 8) ** 2, (0.012 * length + 0.004) ** 2]) @ rot.T)
            weights.append(length * 0.8 ** level / 4)
            classes.append(cls)
        if level < depth:
            end = p + direction * length
            for sign in (-1, 1):
                turn = sign * (0.5 + 0.15 * rng.standard_normal())
                branch(cls, end, angle + turn, length * (0.62 + 0.08 * rng.random()), level + 1)

    for cls, tilt in ((0, 0.45), (1, -0.45)):
        branch(cls, np.array([0.0, -1.1]), math.pi / 2 + tilt, 0.9, 1)
    t = lambda a: torch.as_tensor(np.array(a), dtype=torch.float64)
    w = t(weights)
    return GaussianMixture(t(means), t(covs), w / w.sum()), torch.as_tensor(classes)


# --- the denoisers ---------------------------------------------------------------------------
class ToyMLP(nn.Module):
    """F(x_in, c_noise, labels) for 2-D points: [x, Fourier(c_noise), one-hot] -> MLP -> 2."""

    def __init__(self, hidden: int, layers: int, classes: int = 2):
        super().__init__()
        self.fourier = MPFourier(32)
        dims = [2 + 32 + classes] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(hidden, 2)

    def forward(self, x, c_noise, labels=None, tokens=None):
        # x: [B, 2], c_noise: [B], labels: [B, classes]
        h = torch.cat([x, self.fourier(c_noise), labels.to(x.dtype)], dim=1)
        for layer in self.layers:
            h = nn.functional.silu(layer(h))
        return self.out(h)


def train_denoiser(gmm: GaussianMixture, classes: torch.Tensor, hidden: int, layers: int, iters: int,
                   cfg: ToyConfig, seed: int) -> Denoiser:
    """Adam with EDM2's inverse-sqrt decay; EDM2 uncertainty-weighted loss; eval mode at the end."""
    torch.manual_seed(seed)
    den = Denoiser(ToyMLP(hidden, layers), label_dim=2, sigma_data=0.5, logvar_channels=32)
    opt = torch.optim.Adam(den.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    loss_cfg = LossConfig(P_mean=cfg.P_mean, P_std=cfg.P_std, sigma_data=0.5, label_dropout=cfg.label_dropout)
    gen = torch.Generator().manual_seed(seed)
    ref = max(iters // 8, 1)
    for it in range(iters):
        for g in opt.param_groups:
            g["lr"] = cfg.lr / math.sqrt(max(it / ref, 1))
        x, k = gmm.sample(cfg.batch, generator=gen, return_index=True)
        loss = edm_loss(den, x.float(), classes[k], loss_cfg).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return den.eval().requires_grad_(False)


# --- evaluation ------------------------------------------------------------------------------
def coverage(real: torch.Tensor, fake: torch.Tensor, radius: float = 0.05) -> float:
    """Fraction of the true mass within ``radius`` of some generated point (Monte Carlo over
    true samples ``real``): the parts of the distribution the samples reach."""
    return (torch.cdist(real, fake, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values <= radius).float().mean().item()


def knn_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> float:
    """k-NN recall: fraction of real points inside the union of the generated points' k-NN
    balls (docs/METHODS.md 9). Sharper samples have smaller balls, so it also penalises sharpening."""
    radius = torch.cdist(fake, fake, compute_mode="donot_use_mm_for_euclid_dist").kthvalue(k + 1, dim=1).values  # +1: the point itself
    return (torch.cdist(real, fake, compute_mode="donot_use_mm_for_euclid_dist") <= radius[None]).any(dim=1).float().mean().item()


def run_toy(cfg: ToyConfig, progress=None) -> tuple[dict, dict[str, torch.Tensor], GaussianMixture, torch.Tensor]:
    """Train main + guide and sample with each method. -> (report, samples per method
    [2 * samples, 2] ordered class 0 then 1, mixture, component classes)."""
    t0 = time.perf_counter()
    gmm, classes = make_toy(cfg.depth, cfg.seed)
    say = progress or (lambda msg: None)
    say("training main model")
    main = train_denoiser(gmm, classes, cfg.main_hidden, cfg.main_layers, cfg.main_iters, cfg, cfg.seed + 1)
    say("training guide model")
    guide = train_denoiser(gmm, classes, cfg.guide_hidden, cfg.guide_layers, cfg.guide_iters, cfg, cfg.seed + 2)
    train_s = time.perf_counter() - t0
    scfg = SamplerConfig(steps=cfg.steps, sigma_max=5.0, guidance=cfg.guidance)
    methods = {"none": dict(), "cfg": dict(cfg=True), "autoguidance": dict(guide=guide)}
    report = {"config": asdict(cfg), "train_seconds": round(train_s, 1), "methods": {}}
    out = {}
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    real = {c: gmm.subset(classes == c).sample(cfg.samples, generator=gen).float() for c in (0, 1)}
    for name, kw in methods.items():
        say(f"sampling: {name}")
        xs, ll, cov, rec, nfe = [], [], [], [], 0
        for c in (0, 1):
            labels = torch.full((cfg.samples,), c)
            den = GuidedDenoiser(main, labels=labels, guidance=cfg.guidance if kw else 1.0, **kw)
            noise = torch.randn(cfg.samples, 2, generator=torch.Generator().manual_seed(cfg.seed + 10 + c))
            x = sample(den, noise, scfg)
            xs.append(x)
            ll.append(gmm.subset(classes == c).log_prob(x).mean().item())
            cov.append(coverage(real[c], x, cfg.coverage_radius))
            rec.append(knn_recall(real[c], x))
            nfe = den.nfe + den.guide_nfe
        out[name] = torch.cat(xs)
        report["methods"][name] = {"mean_log_likelihood": float(np.mean(ll)), "coverage": float(np.mean(cov)),
                                   "knn_recall": float(np.mean(rec)),
                                   "nfe_per_sample": nfe, "guidance": cfg.guidance if kw else 1.0}
    ref_ll = [gmm.subset(classes == c).log_prob(real[c]).mean().item() for c in (0, 1)]
    report["true_samples"] = {"mean_log_likelihood": float(np.mean(ref_ll))}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report, out, gmm, classes


def scatter_panel(points: torch.Tensor, n_per_class: int, gmm: GaussianMixture, size: int = 320) -> np.ndarray:
    """Samples over the true density (grey): class 0 blue, class 1 orange. -> uint8 [size, size, 3]"""
    lo, hi = gmm.means.min(0).values.tolist(), gmm.means.max(0).values.tolist()
    half = 0.55 * max(hi[0] - lo[0], hi[1] - lo[1])  # square view of the whole tree, 10% margin
    cx, cy = (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2
    x0, x1, y0, y1 = cx - half, cx + half, cy - half, cy + half
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, size), torch.linspace(y1, y0, size), indexing="xy")
    logp = gmm.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1).double()).reshape(size, size)
    dens = (logp - logp.max()).clamp(min=-12).add(12).div(12).numpy()
    img = (255 - 90 * dens[..., None]).repeat(3, axis=2)
    colours = np.array([[31, 119, 180], [255, 127, 14]], np.float64)
    p = points.numpy()
    cols = ((p[:, 0] - x0) / (x1 - x0) * (size - 1)).round().astype(int)
    rows = ((y1 - p[:, 1]) / (y1 - y0) * (size - 1)).round().astype(int)
    ok = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    cls = np.arange(len(p)) >= n_per_class
    img[rows[ok], cols[ok]] = colours[cls[ok].astype(int)]
    return img.clip(0, 255).astype(np.uint8)


def write_toy(cfg: ToyConfig, out: Path, progress=None) -> dict:
    """Run the toy; write ``out/toy.png`` (no guidance | CFG | autoguidance, over the true
    density) and ``out/toy.json`` (the report). -> the report."""
    from vidgen.render.layout import side_by_side
    from vidgen.render.writer import save_png
    report, samples, gmm, _ = run_toy(cfg, progress)
    panels = [scatter_panel(samples[k], cfg.samples, gmm) for k in ("none", "cfg", "autoguidance")]
    m = report["methods"]
    labels = [f"{k}: ll {m[k]['mean_log_likelihood']:.2f} cov {m[k]['coverage']:.2f}" for k in ("none", "cfg", "autoguidance")]
    save_png(out / "toy.png", side_by_side(*panels, labels=labels, pad=4, pad_value=255), {"toy": report})
    write_json(out / "toy.json", report, indent=2)
    return report
