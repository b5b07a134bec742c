"""Feature detectors for the metrics (docs/METHODS.md section 9), loaded only from verified files.

Every network comes from a local file, found as (first match wins):
  1. an explicit path (`--detector NAME=PATH`),
  2. `--detector-dir DIR` / `detector_dir=`,
  3. `$VIDGEN_CACHE` (default `~/.cache/vidgen`), sub-folder `detectors/`,
and is checked against its published SHA-256 before loading. A missing or different file
is an error naming the file, the expected digest and where to put it; there is never a
fallback to another network, and nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from vidgen.errors import VidgenError
from vidgen.fileio import sha256_file
from vidgen.metrics.preprocess import clip_input
from vidgen.optional import require


@dataclass(frozen=True)
class WeightFile:
    filename: str
    sha256: str
    size: int          # bytes, for the error message (0: not published)
    url: str           # where a user can fetch it by hand


WEIGHTS: dict[str, WeightFile] = {
    # Inception-v3, 2015-12-05 TF weights ported for FID (pytorch-fid release "fid_weights").
    "inception": WeightFile(
        "pt_inception-2015-12-05-6726825d.pth",
        "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", 95_628_359,
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth"),
    # I3D (Kinetics-400) TorchScript detector of the StyleGAN-V / long-video-GAN FVD code.
    "i3d": WeightFile(
        "i3d_torchscript.pt",
        "bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2", 51_235_320,
        "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"),
    # DINOv2 ViT-L/14 backbone, official release.
    "dinov2": WeightFile(
        "dinov2_vitl14_pretrain.pth",
        "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428", 1_217_586_395,
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"),
    # CLIP ViT-L/14 (OpenAI release; the digest is part of its official URL).
    "clip": WeightFile(
        "ViT-L-14.pt",
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", 0,
        "https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"),
}

# The arguments the reference FVD code passes to the I3D TorchScript module.
I3D_KWARGS = dict(rescale=True, resize=True, return_features=True)
# CLIP's image normalisation (OpenAI release)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def cache_dir() -> Path:
    return Path(os.environ.get("VIDGEN_CACHE", "~/.cache/vidgen")).expanduser()


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, per process


def resolve_weights(name: str, path: str | Path | None = None,
                    detector_dir: str | Path | None = None) -> Path:
    """Locate the weight file of detector `name` and verify its SHA-256."""
    if name not in WEIGHTS:
        raise VidgenError(f"unknown detector {name!r}; known: {', '.join(sorted(WEIGHTS))}")
    spec = WEIGHTS[name]
    default_dir = cache_dir() / "detectors"
    candidates = [Path(path).expanduser()] if path else \
        [Path(d).expanduser() / spec.filename for d in (detector_dir, default_dir) if d is not None]
    default_file = default_dir / spec.filename
    others = [f"or {default_file}"] if candidates[0] != default_file else []
    where = f"put it at {candidates[0]}" + ("" if path else
                                            f" ({', '.join(others + ['or pass --detector-dir / --detector NAME=PATH'])})")
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise VidgenError(
            f"detector file {spec.filename} for {name!r} not found (looked at "
            f"{', '.join(map(str, candidates))}). Expected SHA-256 {spec.sha256}"
            f"{f' ({spec.size:,} bytes)' if spec.size else ''}: download it from {spec.url} and {where}.")
    return verify_file(found, spec.sha256, name,
                       f"Replace it with the file from {spec.url} and {where}.")


def verify_file(path: str | Path, sha256: str, name: str, advice: str = "") -> Path:
    """``path`` if its SHA-256 is ``sha256`` (checked once per process and file version)."""
    found = Path(path).expanduser()
    if not found.is_file():
        raise VidgenError(f"detector file {found} for {name!r} not found")
    st = found.stat()
    key = (str(found.resolve()), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key) or sha256_file(found)
    if digest != sha256:
        raise VidgenError(f"detector file {found} for {name!r} has SHA-256 {digest}, expected {sha256}: "
                          f"it is not the reference network. {advice}".rstrip())
    _VERIFIED[key] = digest
    return found


class Detector(nn.Module):
    """Feature network: uint8 images [B, 3, H, W] (or clips [B, 3, T, H, W]) -> [B, D] float32.

    `name`, `feature_dim`, `sha256` (of the weights; it keys caches and is printed in
    reports) and `temporal` (whether inputs are clips) describe it. Subclasses implement
    `features(x)`; inputs arrive on the detector's device, still uint8.

    Classifier detectors (Inception, and the random stand-in used in tests) also give the
    spatial activations whose spatial mean is the feature vector (`spatial_features`, for the
    FID heatmaps) and class logits of a feature vector (`classify`, `num_classes` > 0).
    """

    name: str = "detector"
    feature_dim: int = 0
    sha256: str = ""
    temporal: bool = False
    num_classes: int = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"detector {self.name} has no spatial activations")

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"detector {self.name} is not a classifier")

    @property
    def has_spatial(self) -> bool:
        return type(self).spatial is not Detector.spatial

    @torch.no_grad()
    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> float32 [B, D, h, w]; their mean over (h, w) is `forward(x)`."""
        assert x.dtype == torch.uint8 and x.ndim == 4, (x.dtype, list(x.shape))
        return self.spatial(x.to(self.device)).float()

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, D] -> class logits [B, num_classes] (float32)."""
        assert self.num_classes > 0, f"detector {self.name} is not a classifier"
        return self.class_logits(features.to(self.device)).float()

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8, f"{self.name} takes uint8 pixels, got {x.dtype}"
        assert x.ndim == (5 if self.temporal else 4) and x.shape[1] == 3, \
            f"{self.name} takes [B, 3, {'T, ' if self.temporal else ''}H, W], got {list(x.shape)}"
        out = self.features(x.to(self.device)).float()
        assert out.shape == (len(x), self.feature_dim), (out.shape, self.feature_dim)
        return out


class NetworkDetector(Detector):
    """Wraps an image network implemented here (Inception, DINOv2) with its verified weights."""

    def __init__(self, name: str, net: nn.Module, sha256: str):
        super().__init__()
        self.name, self.net, self.sha256 = name, net.eval().requires_grad_(False), sha256
        self.feature_dim = int(net.feature_dim)
        self.num_classes = int(getattr(net, "num_classes", 0))

    def features(self, x):
        return self.net(x)

    @property
    def has_spatial(self) -> bool:
        return hasattr(self.net, "spatial")

    def spatial(self, x):
        if not hasattr(self.net, "spatial"):
            return super().spatial(x)
        return self.net.spatial(x)

    def class_logits(self, features):
        if not hasattr(self.net, "classify"):
            return super().class_logits(features)
        return self.net.classify(features)


class I3DDetector(Detector):
    """The reference I3D TorchScript module, called as the StyleGAN-V and long-video-GAN FVD
    code call it: uint8 clips [B, 3, T, H, W] at the data's own resolution, with
    `rescale=True, resize=True, return_features=True` (the module maps the pixels to [-1, 1]
    and resizes every frame to 224 x 224 itself) -> 400-d features before the softmax."""

    temporal = True
    feature_dim = 400

    def __init__(self, module, sha256: str):
        super().__init__()
        self.name, self.module, self.sha256 = "i3d", module, sha256
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks .to(device)

    def features(self, x):                                     # x: [B, 3, T, H, W] uint8
        return self.module(x.to(self._anchor.device), **I3D_KWARGS)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.module = self.module.to(self._anchor.device)
        return self


class ClipDetector(Detector):
    """CLIP image tower (open_clip) for CLIP-FD: the image embedding `encode_image` of the
    tower's own eval preprocessing (`preprocess.clip_input`: shorter side to the input size by
    PIL bicubic, centre crop, CLIP mean / std). 768-d for ViT-L/14."""

    def __init__(self, model: nn.Module, sha256: str, name: str = "clip"):
        super().__init__()
        self.name, self.model, self.sha256 = name, model.eval().requires_grad_(False), sha256
        visual = model.visual
        size = visual.image_size
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", CLIP_MEAN))
        self.std = tuple(cfg.get("std", CLIP_STD))
        self.feature_dim = int(visual.output_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def features(self, x):                                     # x: [B, 3, H, W] uint8
        return self.model.encode_image(clip_input(x, self.size, self.mean, self.std, self._anchor.dtype))


def clip_from_config(config: dict, weights: str | Path, sha256: str) -> ClipDetector:
    """A CLIP detector built by open_clip from a config dict (``open_clip.CLIP(**config)``)
    with a safetensors state dict whose SHA-256 must be ``sha256``."""
    from safetensors.torch import load_file

    open_clip = require("open_clip", "text", "the clip detector")
    path = verify_file(weights, sha256, "clip")
    model = open_clip.CLIP(**config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return ClipDetector(model, sha256)


def _openai_clip(file: Path) -> nn.Module:
    """The OpenAI CLIP release (a TorchScript archive, read only after its SHA-256 matched),
    rebuilt as an open_clip module from its state dict."""
    require("open_clip", "text", "the clip detector")
    from open_clip.model import build_model_from_openai_state_dict

    scripted = torch.jit.load(str(file), map_location="cpu")
    model = build_model_from_openai_state_dict(scripted.state_dict())
    return model.float().eval()


class RandomDetector(Detector):
    """Small fixed random network (seeded): for tests and benchmarks of the metric plumbing.

    Clips: average-pools pixels to a 2 x 8 x 8 grid and applies a fixed random linear map +
    tanh. Images: a classifier-shaped stand-in for Inception: pixels are pooled to 2g x 2g,
    each cell of the g x g grid (its 2 x 2 pooled pixels, 12 values) goes through a fixed
    random map + tanh to `feature_dim` channels (the spatial activations); the features are
    their spatial mean and `num_classes` logits a random linear map of the features.
    Its `sha256` is the digest of its weights, so caches keyed on it stay honest.
    """

    def __init__(self, feature_dim: int = 64, temporal: bool = False, seed: int = 0,
                 grid: int = 8, hidden: int = 0, num_classes: int = 10):
        super().__init__()
        self.name, self.feature_dim, self.temporal, self.grid = \
            f"random{feature_dim}{'t' if temporal else ''}", feature_dim, temporal, grid
        g = torch.Generator().manual_seed(seed)
        fan_in = 3 * grid * grid * 2 if temporal else 12
        hidden = hidden or feature_dim
        self.register_buffer("w1", torch.randn(fan_in, hidden, generator=g) / fan_in ** 0.5)
        self.register_buffer("w2", torch.randn(hidden, feature_dim, generator=g) / hidden ** 0.5)
        parts = [self.w1, self.w2]
        if not temporal:
            self.num_classes = num_classes
            self.register_buffer("pos", 0.5 * torch.randn(grid * grid, hidden, generator=g))
            self.register_buffer("w_cls", torch.randn(feature_dim, max(num_classes, 1), generator=g))
            parts += [self.pos, self.w_cls]
            # the classifier is centred on a mid-grey image, so that colours and textures
            # (not the features' common offset) decide the top-1 class
            grey = torch.full((1, 3, 2 * grid, 2 * grid), 128, dtype=torch.uint8)
            self.register_buffer("centre", self.spatial(grey).mean(dim=(2, 3))[0])
        self.sha256 = hashlib.sha256(b"".join(t.numpy().tobytes() for t in parts)).hexdigest()

    def spatial(self, x):                                      # [B, 3, H, W] -> [B, D, g, g]
        g = self.grid
        x = torch.nn.functional.adaptive_avg_pool2d(x.float() / 127.5 - 1, (2 * g, 2 * g))
        cells = rearrange(x, "b c (h i) (w j) -> b (h w) (c i j)", i=2, j=2)        # [B, g*g, 12]
        act = torch.tanh(cells @ self.w1 + self.pos) @ self.w2                     # [B, g*g, D]
        return rearrange(act, "b (h w) d -> b d h w", h=g)

    def class_logits(self, features):
        return (features - self.centre) @ self.w_cls

    @property
    def has_spatial(self) -> bool:
        return not self.temporal

    def features(self, x):
        if self.temporal:                                      # [B, 3, T, H, W]
            x = torch.nn.functional.adaptive_avg_pool3d(x.float() / 127.5 - 1, (2, self.grid, self.grid))
            return torch.tanh(rearrange(x, "b ... -> b (...)") @ self.w1) @ self.w2
        return self.spatial(x).mean(dim=(2, 3))


def _load_state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def load_detector(name: str, path: str | Path | None = None, detector_dir: str | Path | None = None,
                  device: torch.device | str = "cpu") -> Detector:
    """Build detector `name` ('inception', 'i3d', 'dinov2', 'clip') from its verified file."""
    if name == "clip":
        require("open_clip", "text", "the clip detector (CLIP-FD)")
    file = resolve_weights(name, path, detector_dir)
    sha = WEIGHTS[name].sha256
    if name == "inception":
        from vidgen.metrics.inception import FIDInceptionV3

        net = FIDInceptionV3()
        net.load_state_dict(_load_state(file), strict=True)
        det: Detector = NetworkDetector("inception", net, sha)
    elif name == "dinov2":
        from vidgen.metrics.dinov2 import DinoV2ViT

        net = DinoV2ViT()
        net.load_state_dict(_load_state(file), strict=True)
        det = NetworkDetector("dinov2", net, sha)
    elif name == "i3d":
        # A TorchScript archive (the reference detector is only published in this form);
        # loaded only after its SHA-256 matched the published file.
        det = I3DDetector(torch.jit.load(str(file), map_location="cpu").eval(), sha)
    else:
        det = ClipDetector(_openai_clip(file), sha)
    return det.to(device)
