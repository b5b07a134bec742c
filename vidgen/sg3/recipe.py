"""Training recipe of the sg3 family for vidgen's engine (StyleGAN3, Karras et al. 2021).

One step, as the reference trains configs T and R: G (non-saturating loss, optional style
mixing), D (non-saturating loss; the generator's magnitude EMAs and w_avg are updated on the
fakes it sees), Dreg every ``r1_interval`` steps (R1, gamma per dataset; the engine applies
the lazy-regularisation compensation of lr and betas). Everything D sees goes through ADA
(``augment:``, target 0.6) and, for config R, a Gaussian blur whose sigma fades from
``blur_sigma`` to 0 over the first ``blur_fade_kimg`` thousand images. No path-length
regulariser (StyleGAN3 drops it). EMA of G from ``ema:`` (half-life batch * 10 / 32 kimg).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from vidgen.errors import ConfigError
from vidgen.nn.alias_free import fp16_synthesis_layers, upfirdn2d
from vidgen.sg3.data import ImageSet, Mirrored, SyntheticBlobs
from vidgen.sg3.networks import Generator, SG3ModelConfig, build_discriminator
from vidgen.train.ada import AdaController, AdaOps, ada_augment
from vidgen.train.gan import ns_loss_d, ns_loss_g, r1_penalty
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig, OptimizerSpec, Phase, Recipe


@dataclass
class SG3DataConfig:
    path: str = ""  # image folder / prepared dataset / videos, or "synthetic"
    labels: Literal["none", "folders"] = "none"  # folders: one class per sub-folder (model.c_dim of them)
    mirror: bool = False  # add x-flipped copies
    synthetic_num: int = 1024  # images of path "synthetic"


@dataclass
class SG3LossConfig:
    lr_g: float = 0.0025
    lr_d: float = 0.002  # the engine multiplies by r1_interval / (r1_interval + 1)
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 32.8  # per dataset: about quadratic in the resolution (StyleGAN3 docs/configs)
    r1_interval: int = 16
    style_mixing: float = 0.0  # probability; StyleGAN3's configs use 0 (StyleGAN2: 0.9)
    blur_sigma: float = 0.0  # config R: 10 (pixels) at the start ...
    blur_fade_kimg: float = 0.0  # ... fading to 0 over this many kimg (config R: 200 * batch / 32)


@dataclass
class SG3Config:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=781_250, batch=32))
    data: SG3DataConfig = field(default_factory=SG3DataConfig)
    model: SG3ModelConfig = field(default_factory=SG3ModelConfig)
    loss: SG3LossConfig = field(default_factory=SG3LossConfig)
    augment: AugmentSpec = field(default_factory=lambda: AugmentSpec(
        kind="ada", pipeline="bgc", target=0.6, p=0.0, p_max=1.0, speed_kimg=500.0, interval=4))
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="halflife", halflife_kimg=10.0, rampup=0.05))


def seed_latents(seeds, z_dim: int) -> torch.Tensor:
    """z of each seed: [len(seeds), z_dim], as StyleGAN's gen_images.py draws it
    (``numpy.random.RandomState(seed).randn(1, z_dim)``), so seeds name the same images in
    both code bases."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).float()


def blur_images(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (2^(-x^2 / sigma^2) taps over +-3 sigma, unit DC gain), same size.
    img: [B, C, H, W]."""
    radius = math.floor(sigma * 3)
    if radius <= 0:
        return img
    x = torch.arange(-radius, radius + 1, device=img.device, dtype=torch.float32)
    f = torch.exp2(-(x / sigma).square())
    return upfirdn2d(img, (f / f.sum()).to(img.dtype), padding=(radius, radius, radius, radius))


class SG3Recipe(Recipe):
    family = "sg3"
    config_class = SG3Config
    mixed_precision = "fp16-layers"  # StyleGAN3: float16 in the top num_fp16_res resolutions, clamp 256

    def __init__(self, cfg: SG3Config, device: torch.device):
        super().__init__(cfg, device)
        m, l, a = cfg.model, cfg.loss, cfg.augment
        if m.magnitude_ema_beta <= 0:  # StyleGAN3: a half-life of 20k images
            m.magnitude_ema_beta = 0.5 ** (cfg.engine.batch / 20_000)
        m.check()
        a.check(("ada", "none"))
        if l.r1_gamma < 0 or (l.r1_gamma > 0 and l.r1_interval < 1):
            raise ConfigError(f"loss.r1_gamma must be >= 0 and loss.r1_interval >= 1; got {l.r1_gamma}, "
                              f"{l.r1_interval}")
        if not 0 <= l.style_mixing <= 1:
            raise ConfigError(f"loss.style_mixing must be in [0, 1]; got {l.style_mixing}")
        self.G = Generator(m).to(device)
        self.D = build_discriminator(m).to(device)
        on = a.kind == "ada"
        self.ada = AdaController(target=a.target, speed_kimg=a.speed_kimg, interval=a.interval,
                                 p_init=a.p if on else 0.0, p_max=a.p_max if on else 0.0)
        self.ada_ops = AdaOps.preset(a.pipeline)
        self._labels: torch.Tensor | None = None  # class of every training image

    # --- what the engine trains ---------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        l = self.cfg.loss
        return {"G": OptimizerSpec(("G",), l.lr_g, betas=tuple(l.betas)),
                "D": OptimizerSpec(("D",), l.lr_d, betas=tuple(l.betas),
                                   reg_interval=l.r1_interval if l.r1_gamma > 0 else 1)}

    def phases(self) -> list[Phase]:
        out = [Phase("G", "G", self.loss_g, ("G",)), Phase("D", "D", self.loss_d, ("D",))]
        if self.cfg.loss.r1_gamma > 0:
            out.append(Phase("Dreg", "D", self.loss_r1, ("D",), interval=self.cfg.loss.r1_interval))
        return out

    def fp16_layers(self, num_fp16_res: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
        return (fp16_synthesis_layers(self.G.synthesis.layers, self.cfg.model.resolution, num_fp16_res)
                + self.D.fp16_layers(num_fp16_res))

    def ema(self) -> dict[str, EMASpec]:
        return {"G": self.cfg.ema}

    def dataset(self) -> torch.utils.data.Dataset:
        d, m = self.cfg.data, self.cfg.model
        if not d.path:
            raise ConfigError("data.path is empty; pass --data DIR (images, image folders, a prepared dataset) "
                              "or --data synthetic")
        if d.path == "synthetic":
            ds = SyntheticBlobs(d.synthetic_num, m.resolution, m.c_dim or 4)
            labels = [i % ds.classes for i in range(len(ds))]
        else:
            ds = ImageSet(d.path, m.resolution, d.labels == "folders")
            if ds.num_classes != m.c_dim:
                raise ConfigError(f"{d.path}: data.labels={d.labels!r} gives {ds.num_classes} classes but "
                                  f"model.c_dim is {m.c_dim}; set model.c_dim={ds.num_classes}")
            labels = ds.class_of
        if d.path == "synthetic" and m.c_dim == 0:
            labels = [0] * len(ds)
        self._labels = torch.as_tensor(labels)
        return Mirrored(ds) if d.mirror else ds

    # --- pieces ---------------------------------------------------------------------------
    def _c(self, n: int) -> torch.Tensor | None:
        """Labels for generated images: those of random training images (their frequencies)."""
        if self.cfg.model.c_dim == 0:
            return None
        if self._labels is None:
            idx = torch.randint(self.cfg.model.c_dim, (n,))
        else:
            idx = self._labels[torch.randint(len(self._labels), (n,))]
        return self.G.labels(idx.to(self.device), n)

    def _ws(self, n: int, c: torch.Tensor | None, update_emas: bool) -> torch.Tensor:
        G, p = self.G, self.cfg.loss.style_mixing
        ws = G.mapping(torch.randn(n, G.cfg.z_dim, device=self.device), c, update_emas=update_emas)
        if p > 0:  # a second z from a random layer on (StyleGAN2's mixing regularisation)
            cut = int(torch.randint(1, ws.shape[1], ()))
            if float(torch.rand(())) < p:
                ws2 = G.mapping(torch.randn(n, G.cfg.z_dim, device=self.device), c)
                ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
        return ws

    def _fake(self, n: int, update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self._c(n)
        return self.G.synthesis(self._ws(n, c, update_emas), update_emas=update_emas), c

    def blur_sigma(self, step: int) -> float:
        l = self.cfg.loss
        if l.blur_fade_kimg <= 0:
            return 0.0
        return max(1 - step * self.cfg.engine.batch / (l.blur_fade_kimg * 1e3), 0.0) * l.blur_sigma

    def run_D(self, img: torch.Tensor, c: torch.Tensor | None, step: int) -> torch.Tensor:
        img = blur_images(img, self.blur_sigma(step))
        return self.D(ada_augment(img, self.ada.p, self.ada_ops), c)

    def _real(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        img, label = batch
        img = img.to(self.device)
        return img, (self.G.labels(label.to(self.device), img.shape[0]) if self.cfg.model.c_dim else None)

    # --- phases ---------------------------------------------------------------------------
    def loss_g(self, batch, step: int):
        fake, c = self._fake(batch[0].shape[0])
        logits = self.run_D(fake, c, step)
        loss = ns_loss_g(logits).mean()
        return loss, {"loss/G": float(loss.detach()), "logits/fake": float(logits.detach().mean())}

    def loss_d(self, batch, step: int):
        img, c_real = self._real(batch)
        with torch.no_grad():  # the magnitude EMAs and w_avg follow the fakes D sees (StyleGAN3)
            fake, c_fake = self._fake(img.shape[0], update_emas=True)
        fake_logits = self.run_D(fake, c_fake, step)
        real_logits = self.run_D(img, c_real, step)
        self.ada.accumulate(real_logits)
        loss = ns_loss_d(real_logits, fake_logits).mean()
        return loss, {"loss/D": float(loss.detach()), "logits/real": float(real_logits.detach().mean()),
                      "logits/fake": float(fake_logits.detach().mean()),
                      "ada/rt": float(real_logits.detach().sign().mean())}

    def loss_r1(self, batch, step: int):
        img, c = self._real(batch)
        img = img.detach().requires_grad_(True)
        penalty = r1_penalty(self.run_D(img, c, step), img)
        return penalty.mean() * (self.cfg.loss.r1_gamma / 2), {"loss/r1": float(penalty.detach().mean())}

    # --- hooks ----------------------------------------------------------------------------
    def end_step(self, step: int, stats: dict[str, float]) -> None:
        self.ada.step(step)
        stats["augment/p"] = self.ada.p
        stats["blur_sigma"] = self.blur_sigma(step)

    def state_dict(self) -> dict:
        return {"ada": self.ada.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "ada" in state:
            self.ada.load_state_dict(state["ada"])

    @torch.no_grad()
    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor | None:
        """Images of seeds seed .. seed + num - 1 by the EMA generator, classes in turn."""
        G = nets.get("G_ema", nets.get("G"))
        z = seed_latents(range(seed, seed + num), G.cfg.z_dim).to(self.device)
        c = G.labels(torch.arange(num) % max(G.cfg.c_dim, 1), num)
        return G(z, c).clamp(-1, 1)

    def run_name(self) -> str:
        m, d = self.cfg.model, self.cfg.data
        data = Path(d.path).name or "data"
        return f"sg3-{m.arch.lower()}-{data}-{m.resolution}x{m.resolution}-b{self.cfg.engine.batch}"
