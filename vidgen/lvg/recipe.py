"""Training recipes of the long-video GAN (docs/METHODS.md 1.5) for the shared engine.

Low-res phase (:class:`LowResRecipe`, ``vidgen train lvg-lowres``): the generator renders
``clip_len + slack`` (128 + 32) frames and a random ``clip_len`` window is cropped, so the
discriminator sees every phase of the 32-frame grid of the lowest temporal level. Losses:
non-saturating logistic; lazy R1 (gamma 1, every 16 steps) on real clips; DiffAugment
colour / translation / cutout, time stretch 2^U(-1, 1) and x-flip with one set of parameters
per clip, applied to real and generated clips alike; Adam (0, 0.99), lr G 0.003, D 0.002 (the
engine turns it into 0.002 * 16/17 for the lazy R1); EMA of G with beta 0.99985 after a
25k-step warm-up.

The super-res phase lives in :mod:`vidgen.lvg.recipe_superres` and is re-exported here, as
``vidgen train`` looks both up in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vidgen.config import PositiveFloat, PositiveInt
from vidgen.data.augment import AugmentConfig, augment
from vidgen.errors import ConfigError
from vidgen.lvg.lowres import LowResGConfig, LowResGenerator
from vidgen.lvg.lowres_d import LowResDConfig, LowResDiscriminator
from vidgen.train.gan import ns_loss_d, ns_loss_g, r1_penalty
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig, OptimizerSpec, Phase, Recipe


@dataclass
class LowResDataConfig:
    path: str = ""  # folder of videos or a prepared dataset
    resolution: tuple[int, int] = (36, 64)  # (H, W)
    clip_len: PositiveInt = 128
    stride: PositiveInt = 1  # take every `stride`-th source frame


@dataclass
class LowResModelConfig:
    G: LowResGConfig = field(default_factory=LowResGConfig)
    D: LowResDConfig = field(default_factory=LowResDConfig)
    slack: int = 32  # extra frames rendered in training; a random clip_len window is kept


@dataclass
class LowResLossConfig:
    lr_g: PositiveFloat = 0.003
    lr_d: PositiveFloat = 0.002  # x 16/17 by the engine (lazy R1 compensation)
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16


@dataclass
class LowResConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(
        steps=100_000, batch=64, accum=2, checkpoint_every=5000))
    data: LowResDataConfig = field(default_factory=LowResDataConfig)
    model: LowResModelConfig = field(default_factory=LowResModelConfig)
    loss: LowResLossConfig = field(default_factory=LowResLossConfig)
    # D sees clip-consistent DiffAugment with a random time stretch (docs/METHODS.md 1.3)
    augment: AugmentSpec = field(default_factory=lambda: AugmentSpec(
        kind="diffaug", xflip=0.5, color=True, translation=0.125, cutout=0.5, time_stretch=1.0, p=1.0))
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="beta", beta=0.99985, warmup_steps=25_000))

    RENAMED_KEYS = {"loss.augment": "augment", "loss.ema": "ema"}


def build_generator(cfg: LowResConfig) -> LowResGenerator:
    return LowResGenerator(cfg.model.G, *cfg.data.resolution)


def build_discriminator(cfg: LowResConfig) -> LowResDiscriminator:
    return LowResDiscriminator(cfg.model.D, cfg.data.clip_len, max(cfg.data.resolution))


def check_config(cfg: LowResConfig) -> None:
    H, W = cfg.data.resolution
    if H < 4 or W < 4 or max(H, W) % 16:
        raise ConfigError(f"data.resolution must have a long edge that is a multiple of 16 (e.g. 36x64); got {H}x{W}")
    T = cfg.data.clip_len
    if T < 16 or T & (T - 1):
        raise ConfigError(f"data.clip_len must be a power of two >= 16 (e.g. 128); got {T}")
    cfg.augment.check(("diffaug", "none"))
    if cfg.model.slack < 0:
        raise ConfigError(f"model.slack must be >= 0; got {cfg.model.slack}")


class LowResRecipe(Recipe):
    family = "lvg-lowres"
    config_class = LowResConfig

    def __init__(self, cfg: LowResConfig, device: torch.device):
        super().__init__(cfg, device)
        check_config(cfg)
        self.G = build_generator(cfg).to(device)
        self.D = build_discriminator(cfg).to(device)
        a = cfg.augment
        self._augment = None if a.kind == "none" else AugmentConfig(
            xflip=a.xflip, color=a.color, translation=a.translation, cutout=a.cutout,
            time_stretch=a.time_stretch, p=a.p)

    # --- what the engine trains ---------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        lc = self.cfg.loss
        return {"G": OptimizerSpec(("G",), lc.lr_g, betas=lc.betas),
                "D": OptimizerSpec(("D",), lc.lr_d, betas=lc.betas, reg_interval=lc.r1_interval)}

    def ema(self) -> dict[str, EMASpec]:
        return {"G": self.cfg.ema}

    def phases(self) -> list[Phase]:
        return [Phase("G", "G", self.loss_g, ("G",)),
                Phase("D", "D", self.loss_d, ("D",)),
                Phase("Dreg", "D", self.loss_r1, ("D",), interval=self.cfg.loss.r1_interval)]

    def dataset(self) -> torch.utils.data.Dataset:
        from vidgen.data.datasets import ClipDataset

        d = self.cfg.data
        if not d.path:
            raise ConfigError("data.path is empty; pass --data DIR (a folder of videos or a prepared dataset)")
        return ClipDataset(d.path, clip_len=d.clip_len, stride=d.stride, resolution=tuple(d.resolution),
                           random_start=True)

    # --- losses ---------------------------------------------------------------------------
    def fake_clips(self, n: int) -> torch.Tensor:
        """n generated clips [n, 3, clip_len, H, W]: clip_len + slack frames from fresh latent
        noise (global RNG), then a random clip_len window of each (docs/METHODS.md 1.2)."""
        T, slack = self.cfg.data.clip_len, self.cfg.model.slack
        C = self.cfg.model.G.latent.noise_channels
        t0 = torch.randint(0, max(slack, 1), (n,)).tolist()  # as the reference: offsets 0 .. slack - 1
        return self.G(lambda a, b: torch.randn(n, C, b - a, device=self.device), T + slack, offsets=t0, length=T)

    def run_d(self, clips: torch.Tensor) -> torch.Tensor:
        """Clip-consistent augmentation (colour, translation, cutout, time stretch, x-flip), then D."""
        return self.D(augment(clips, self._augment) if self._augment is not None else clips)

    def loss_g(self, batch: torch.Tensor, step: int):
        logits = self.run_d(self.fake_clips(batch.shape[0]))
        return ns_loss_g(logits).mean(), {"G_score": logits.detach().mean().item()}

    def loss_d(self, batch: torch.Tensor, step: int):
        with torch.no_grad():
            fake = self.fake_clips(batch.shape[0])
        fake_logits, real_logits = self.run_d(fake), self.run_d(batch)
        loss = ns_loss_d(real_logits, fake_logits).mean()
        return loss, {"D_real": real_logits.detach().mean().item(), "D_fake": fake_logits.detach().mean().item()}

    def loss_r1(self, batch: torch.Tensor, step: int):
        real = batch.detach().requires_grad_(True)
        penalty = r1_penalty(self.run_d(real), real)
        return penalty.mean() * (self.cfg.loss.r1_gamma / 2), {"r1": penalty.detach().mean().item()}

    # --- media and names ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor:
        """num videos of clip_len frames, seeds seed .. seed + num - 1: [N, 3, T, H, W]."""
        G = nets["G"]
        T = self.cfg.data.clip_len
        return G.render_seeds(list(range(seed, seed + num)), T, 0, T).clamp(-1, 1)

    def run_name(self) -> str:
        d = self.cfg.data
        name = Path(d.path).name or "data"
        return f"lvg-lowres-{name}-{d.resolution[0]}x{d.resolution[1]}-b{self.cfg.engine.batch}"


def __getattr__(name: str):
    # `vidgen train lvg-superres` resolves vidgen.lvg.recipe:SuperResRecipe; import it lazily so
    # the low-res phase does not depend on the super-res modules being importable.
    if name in ("SuperResRecipe", "SuperResConfig"):
        from vidgen.lvg import recipe_superres

        return getattr(recipe_superres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
