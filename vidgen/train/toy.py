"""A tiny GAN that exercises every part of the engine: two networks, three phases (G, D and
lazy R1 on D), EMA of G, images or short clips. It trains in seconds on a CPU and is what the
engine's tests, ``tools/bench_engine.py`` and ``configs/toygan-tiny.yaml`` run.

Data: ``data.path = "synthetic"`` makes ``data.num`` smooth random patterns (fixed by the index,
so loading is deterministic); any other path is read with ``vidgen.data.datasets.ClipDataset``.
``model.latents = "index"`` takes each sample's latents from its dataset index instead of the
global RNG, so a batch's result does not depend on how it is split over ranks (the DDP test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from vidgen.errors import ConfigError
from vidgen.registry import Family, register
from vidgen.train.gan import ns_loss_d, ns_loss_g, r1_penalty
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig, OptimizerSpec, Phase, Recipe


@dataclass
class ToyDataConfig:
    path: str = "synthetic"  # "synthetic" or a dataset folder / folder of videos
    resolution: PositiveInt = 16  # square side, a multiple of 4
    frames: NonNegativeInt = 0  # 0: images [C, H, W]; > 0: clips [C, T, H, W] of this many frames
    num: PositiveInt = 256  # synthetic samples


@dataclass
class ToyModelConfig:
    z_dim: PositiveInt = 32
    channels: PositiveInt = 32
    lr_g: PositiveFloat = 0.002
    lr_d: PositiveFloat = 0.002
    r1_gamma: NonNegativeFloat = 1.0
    r1_interval: PositiveInt = 4  # lazy R1 every this many steps
    latents: Literal["rng", "index"] = "rng"


@dataclass
class ToyGANConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=200, batch=8, workers=0))
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # kind "none" only
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="halflife", halflife_kimg=0.5, rampup=0.05))

    RENAMED_KEYS = {"model.ema": "ema"}


class SyntheticPatterns(torch.utils.data.Dataset):
    """Sums of random oriented sinusoids, drifting over time for clips; item i is fixed by i."""

    def __init__(self, num: int, resolution: int, frames: int, seed: int = 1234):
        self.num, self.res, self.frames, self.seed = num, resolution, frames, seed
        self._cache: dict[int, torch.Tensor] = {}  # items are fixed, so each is made once

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self._cache:
            self._cache[i] = self._make(i)
        return self._cache[i]

    def _make(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        t = torch.arange(max(self.frames, 1)).float()[:, None, None, None]  # [T, 1, 1, 1]
        freq = torch.rand(3, 2, generator=g) * 3 + 0.5  # per channel, (fy, fx)
        phase = torch.rand(3, generator=g) * 2 * math.pi
        speed = torch.randn(3, generator=g) * 0.5
        ax = torch.linspace(0, 2 * math.pi, self.res)
        yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # [H, W]
        arg = freq[:, 0, None, None] * yy + freq[:, 1, None, None] * xx + phase[:, None, None]  # [3, H, W]
        clip = torch.sin(arg[None] + speed[None, :, None, None] * t) * 0.9  # [T, 3, H, W]
        clip = rearrange(clip, "t c h w -> c t h w")
        return clip if self.frames > 0 else clip[:, 0]


class IndexedLatents(torch.utils.data.Dataset):
    """Adds two latents per item, drawn from a generator seeded by the index: {"x", "z": [2, Z]}."""

    def __init__(self, base: torch.utils.data.Dataset, z_dim: int, seed: int):
        self.base, self.z_dim, self.seed = base, z_dim, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 7_919 + i)
        return {"x": self.base[i], "z": torch.randn(2, self.z_dim, generator=g)}


class _Frames(torch.utils.data.Dataset):
    """ClipDataset items as {"x": clip} (or its first frame for image training)."""

    def __init__(self, base, frames: int):
        self.base, self.frames = base, frames

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        clip = self.base[i]  # [C, T, H, W]
        return clip if self.frames > 0 else clip[:, 0]


class ToyG(nn.Module):
    """z [B, Z] -> images [B, 3, R, R] (or clips [B, 3, T, R, R], time folded into channels)."""

    def __init__(self, z_dim: int, ch: int, res: int, frames: int):
        super().__init__()
        self.frames, self.res = frames, res
        self.fc = nn.Linear(z_dim, ch * 4 * 4)
        ups = []
        for _ in range(int(math.log2(res // 4))):
            ups += [nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*ups)
        self.out = nn.Conv2d(ch, 3 * max(frames, 1), 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.fc(z), 0.2)
        x = rearrange(x, "b (c h w) -> b c h w", h=4, w=4)
        x = torch.tanh(self.out(self.body(x)))  # [B, 3 * T, R, R]
        if self.frames > 0:
            x = rearrange(x, "b (c t) h w -> b c t h w", t=self.frames)
        return x


class ToyD(nn.Module):
    """images [B, 3, R, R] or clips [B, 3, T, R, R] -> logits [B]."""

    def __init__(self, ch: int, res: int, frames: int):
        super().__init__()
        layers, c_in = [], 3 * max(frames, 1)
        for _ in range(int(math.log2(res // 4))):
            layers += [nn.Conv2d(c_in, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            c_in = ch
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            x = rearrange(x, "b c t h w -> b (c t) h w")
        return self.head(self.body(x).flatten(1)).squeeze(1)


class ToyGANRecipe(Recipe):
    family = "toygan"
    config_class = ToyGANConfig

    def __init__(self, cfg: ToyGANConfig, device: torch.device):
        super().__init__(cfg, device)
        d, m = cfg.data, cfg.model
        if d.resolution < 4 or d.resolution & (d.resolution - 1):
            raise ConfigError(f"data.resolution must be a power of two >= 4; got {d.resolution}")
        cfg.augment.check(("none",))
        self.G = ToyG(m.z_dim, m.channels, d.resolution, d.frames).to(device)
        self.D = ToyD(m.channels, d.resolution, d.frames).to(device)

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        m = self.cfg.model
        return {"G": OptimizerSpec(("G",), m.lr_g),
                "D": OptimizerSpec(("D",), m.lr_d, reg_interval=m.r1_interval)}

    def ema(self) -> dict[str, EMASpec]:
        return {"G": self.cfg.ema}

    def dataset(self) -> torch.utils.data.Dataset:
        d, m = self.cfg.data, self.cfg.model
        if d.path == "synthetic":
            base = SyntheticPatterns(d.num, d.resolution, d.frames)
        else:
            from vidgen.data.datasets import ClipDataset
            base = _Frames(ClipDataset(d.path, clip_len=max(d.frames, 1), resolution=(d.resolution, d.resolution)),
                           d.frames)
        if m.latents == "index":
            return IndexedLatents(base, m.z_dim, self.cfg.engine.seed)
        return base

    # --- the three phases ------------------------------------------------------------
    def _split(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(batch, dict):
            return batch["x"], batch["z"]  # x: [B, 3, (T,) R, R], z: [B, 2, Z]
        return batch, None

    def _z(self, z: torch.Tensor | None, n: int, which: int) -> torch.Tensor:
        if z is not None:
            return z[:, which]
        return torch.randn(n, self.cfg.model.z_dim, device=self.device)

    def loss_g(self, batch, step: int):
        x, z = self._split(batch)
        logits = self.D(self.G(self._z(z, x.shape[0], 0)))
        return ns_loss_g(logits).mean(), {"fake_score": logits.detach().mean()}

    def loss_d(self, batch, step: int):
        x, z = self._split(batch)
        with torch.no_grad():
            fake = self.G(self._z(z, x.shape[0], 1))
        real_logits, fake_logits = self.D(x), self.D(fake)
        return ns_loss_d(real_logits, fake_logits).mean(), {"real_score": real_logits.detach().mean()}

    def loss_r1(self, batch, step: int):
        x, _ = self._split(batch)
        x = x.detach().requires_grad_(True)
        penalty = r1_penalty(self.D(x), x)
        return penalty.mean() * (self.cfg.model.r1_gamma / 2), {"r1": penalty.detach().mean()}

    def phases(self) -> list[Phase]:
        return [Phase("G", "G", self.loss_g, ("G",)),
                Phase("D", "D", self.loss_d, ("D",)),
                Phase("Dreg", "D", self.loss_r1, ("D",), interval=self.cfg.model.r1_interval)]

    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(seed)
        z = torch.randn(num, self.cfg.model.z_dim, generator=g, device=self.device)
        return nets["G"](z)

    def run_name(self) -> str:
        d = self.cfg.data
        data = "synthetic" if d.path == "synthetic" else Path(d.path).name
        clip = f"-t{d.frames}" if d.frames else ""
        return f"toygan-{data}-{d.resolution}x{d.resolution}{clip}-b{self.cfg.engine.batch}"


register(Family(name="toygan", recipe="vidgen.train.toy:ToyGANRecipe", kind="image",
                summary="a tiny image GAN for testing the engine"))
