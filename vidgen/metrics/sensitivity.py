"""Where FID looks: per-image sensitivity of FID (Kynkaanniemi et al. 2023, "The Role of
ImageNet Classes in Frechet Inception Distance", section 3 and its Grad-CAM heatmaps).

FID = |mu_r - mu_g|^2 + tr S_r + tr S_g - 2 tr (A S_g A)^(1/2), A = S_r^(1/2). With
M = A S_g A = V diag(l) V^T, d tr M^(1/2) = tr(A M^(-1/2) A dS_g) / 2, so

    dFID / dS_g = G = I - A V diag(l^(-1/2)) V^T A   (eigenvalues below 1e-10 max(l) dropped),
    dFID / dmu_g = 2 (mu_g - mu_r).

The generated set has n images with features f_i (equal weights), mu_g = mean f_i and
S_g = c / n sum (f_i - mu_g)(f_i - mu_g)^T (c = 1, or n / (n - 1) for the unbiased covariance):

- the gradient with respect to one image's features, g_i = dFID / df_i =
  2 (mu_g - mu_r) / n + 2 c G (f_i - mu_g) / n;
- its influence, the derivative of FID with respect to the image's weight in the set,
  u_i = [2 (mu_g - mu_r) . (f_i - mu_g) + c ((f_i - mu_g)^T G (f_i - mu_g) - tr(G S_ml))] / n:
  removing image i changes FID by about -u_i, and the u_i sum to 0. The images that "move
  FID most" are those with the largest |u_i|.

The FID features are the spatial mean of the mixed_10 activations a_i [D, h, w], so the
gradient with respect to a_i[:, y, x] is g_i / (h w) at every position: Grad-CAM's channel
weights are g_i / (h w) and the heatmap is ReLU(sum_k g_ik a_ik[y, x]), normalised to [0, 1]
by its maximum and upsampled to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import einsum

from vidgen.metrics.frechet import FeatureStats


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


@dataclass
class FIDGradient:
    """dFID / dmu_g and dFID / dS_g at the generated statistics; `c` is the covariance
    normalisation (1: maximum likelihood, n / (n - 1): unbiased)."""

    mu_r: np.ndarray      # [D]
    mu_g: np.ndarray      # [D]
    s_g_ml: np.ndarray    # [D, D] maximum-likelihood covariance of the generated features
    G: np.ndarray         # [D, D] dFID / dS_g (symmetric)
    c: float
    n: int

    @classmethod
    def at(cls, real: FeatureStats, fake: FeatureStats, unbiased: bool = False) -> "FIDGradient":
        mu_r, s_r = real.mean_cov(unbiased)
        mu_g, s_ml = fake.mean_cov(False)
        n = fake.num_items
        c = n / (n - 1) if unbiased else 1.0
        a = _sym_sqrt(s_r)
        m = a @ (c * s_ml) @ a
        w, v = np.linalg.eigh((m + m.T) / 2)
        keep = w > 1e-10 * max(float(w.max()), 1e-300)
        inv_root = (v[:, keep] / np.sqrt(w[keep])) @ v[:, keep].T       # M^(-1/2) on its range
        G = np.eye(len(mu_g)) - a @ inv_root @ a
        return cls(mu_r, mu_g, s_ml, (G + G.T) / 2, c, n)

    def feature_grad(self, feats: np.ndarray) -> np.ndarray:
        """feats [k, D] (rows of the generated set) -> dFID / df_i [k, D]."""
        d = np.asarray(feats, np.float64) - self.mu_g
        return (2 * (self.mu_g - self.mu_r) + 2 * self.c * d @ self.G) / self.n

    def influence(self, feats: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """feats [k, D] -> dFID / dw_i [k]: removing image i changes FID by about -u_i.
        Rows are taken `chunk` at a time (memory O(chunk D))."""
        out = np.empty(len(feats))
        trace = np.sum(self.G * self.s_g_ml)
        for a in range(0, len(feats), chunk):
            d = np.asarray(feats[a:a + chunk], np.float64) - self.mu_g
            quad = ((d @ self.G) * d).sum(axis=1)
            out[a:a + chunk] = (2 * d @ (self.mu_g - self.mu_r) + self.c * (quad - trace)) / self.n
        return out


def grad_cam(spatial: torch.Tensor, grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """spatial: activations [B, D, h, w]; grad: dFID / dfeatures [B, D] -> heatmaps [B, H, W]
    in [0, 1]: ReLU(sum_k grad_k a_k) normalised by its maximum, bilinearly upsampled."""
    cam = F.relu(einsum(spatial.double(), grad.double(), "b d h w, b d -> b h w"))
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-30)
    cam = (cam / peak[:, None, None]).float()
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)


# Colour ramp of the overlays: black, purple, red, orange, yellow-white (like "inferno").
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)


def colormap(heat: np.ndarray) -> np.ndarray:
    """heat [..., ] in [0, 1] -> uint8 RGB [..., 3] along the ramp."""
    t = np.clip(heat, 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(np.int64), len(_RAMP) - 2)
    f = (t - i)[..., None]
    return np.round(_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """frame uint8 [H, W, 3], heat [H, W] in [0, 1] -> the heatmap blended over the frame."""
    mixed = (1 - alpha) * frame.astype(np.float64) + alpha * colormap(heat).astype(np.float64)
    return np.round(mixed).astype(np.uint8)


def heatmap_tiles(frames: list[np.ndarray], heats: list[np.ndarray], min_height: int = 128) -> list[np.ndarray]:
    """One tile per image: the frame and its overlay side by side, enlarged (nearest) by an
    integer factor to at least `min_height` pixels."""
    tiles = []
    for frame, heat in zip(frames, heats):
        pair = np.concatenate([frame, overlay(frame, heat)], axis=1)        # [H, 2W, 3]
        k = max(1, -(-min_height // frame.shape[0]))
        tiles.append(np.repeat(np.repeat(pair, k, axis=0), k, axis=1))
    return tiles



def fid_heatmaps(detector, real: FeatureStats, fake: FeatureStats, feats: torch.Tensor, frames, num: int,
                 unbiased: bool = False, batch: int = 16) -> tuple[dict, np.ndarray]:
    """Heatmaps of the `num` generated images that move FID most.

    detector: a classifier detector with spatial activations (Inception's mixed_10);
    feats: the generated features [n, D] in the order of `frames` (an `image.FakeFrames`).
    Returns (the report entry, a PNG grid uint8 [H, W, 3]: each tile the image and its overlay).
    """
    from vidgen.render.layout import grid

    grad = FIDGradient.at(real, fake, unbiased)
    u = grad.influence(feats.numpy())
    top = np.argsort(-np.abs(u), kind="stable")[:num]
    images, heats = [], []
    for a in range(0, len(top), batch):
        rows = top[a:a + batch]
        pix = np.stack([frames.frame(int(i)) for i in rows])                          # [b, H, W, 3]
        x = torch.from_numpy(pix).permute(0, 3, 1, 2).contiguous()
        spatial = detector.spatial_features(x).cpu()                                  # [b, D, h, w]
        g = torch.from_numpy(grad.feature_grad(feats[torch.from_numpy(rows)].numpy()))
        heats += list(grad_cam(spatial, g, pix.shape[1:3]).numpy())
        images += list(pix)
    classes = detector.classify(feats[torch.from_numpy(top)]).argmax(dim=1).tolist() if detector.num_classes else []
    entries = []
    for rank, i in enumerate(top):
        e = {"rank": rank + 1, "row": int(i), **frames.describe_row(int(i)), "influence": float(u[i])}
        if classes:
            e["top1_class"] = int(classes[rank])
        entries.append(e)
    labels = [f"#{e['rank']} " + " ".join(f"{k} {e[k]}" for k in ("seed", "video", "image", "frame") if k in e)
              + f"  {e['influence']:+.3g}" for e in entries]
    picture = grid(heatmap_tiles(images, heats), ncols=min(2, len(images)), pad=4, labels=labels)
    info = {"images": entries, "num_generated": int(len(u)), "influence_sum": float(u.sum()),
            "method": "Grad-CAM on mixed_10 of dFID/dfeatures; images ranked by |dFID/dweight| "
                      "(docs/METRICS.md, FID heatmaps)"}
    return info, picture
