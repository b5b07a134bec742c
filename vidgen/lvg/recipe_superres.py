"""Training recipe of the long-video GAN's super-resolution phase (docs/METHODS.md 1.4, 1.5).

One step on a batch of short clips (12 low-res frames in, the 4 matching high-res frames out):

- low-res input augmentation (p = 0.5 per op: scale, rotation, anisotropy, sub-pixel shift,
  noise; one draw per clip) so the generator tolerates *generated* low-res input;
- the discriminator sees the 4 high-res frames stacked with the 4 low-res ones upsampled;
  adaptive augmentation (ADA, target 0.6, p <= 0.5, pipeline ``augment.pipeline``, 'bgc'
  by default) is applied to both jointly, with the same parameters, and the low-res
  conditioning is kept only with probability 0.1;
- non-saturating logistic loss, lazy R1 (gamma 1, every 16 steps) on the high-res input,
  Adam (0, 0.99), lr G 0.003, D 0.003 * 16/17 (the engine's lazy-regularisation factor),
  EMA of G with beta 0.99985 after a 25k-step warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.config import PositiveFloat, PositiveInt
from vidgen.errors import ConfigError
from vidgen.lvg.superres import SuperResDiscriminator, SuperResGenerator, SuperResModelConfig
from vidgen.nn.alias_free import fp16_synthesis_layers
from vidgen.train.ada import AdaController, AdaOps, ada_augment
from vidgen.train.gan import ns_loss_d, ns_loss_g, r1_penalty
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig, OptimizerSpec, Phase, Recipe


@dataclass
class SuperResDataConfig:
    path: str = ""  # prepared dataset (both resolutions) or a folder of videos / frames
    stride: PositiveInt = 1  # source frames between clip frames


@dataclass
class SuperResLossConfig:
    lr_g: PositiveFloat = 0.003
    lr_d: PositiveFloat = 0.003  # the engine multiplies by r1_interval / (r1_interval + 1) = 16/17
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 16  # lazy R1 every this many steps
    lr_cond_prob: float = 0.1  # the discriminator keeps the low-res conditioning this often (zeroed w.p. 0.9)
    # G's low-res input is corrupted so that it tolerates generated low-res frames:
    input_p: float = 0.5  # probability of each op per clip
    input_strength: float = 8.0  # scale of the ops' ranges (see lowres_input_augment)


@dataclass
class SuperResConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=275_000, batch=32))
    data: SuperResDataConfig = field(default_factory=SuperResDataConfig)
    model: SuperResModelConfig = field(default_factory=SuperResModelConfig)
    loss: SuperResLossConfig = field(default_factory=SuperResLossConfig)
    # ADA on the low- and high-res frames jointly: target 0.6, p <= 0.5 (docs/METHODS.md 1.4)
    augment: AugmentSpec = field(default_factory=lambda: AugmentSpec(
        kind="ada", pipeline="bgc", target=0.6, p=0.0, p_max=0.5, speed_kimg=500.0, interval=4))
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="beta", beta=0.99985, warmup_steps=25_000))

    RENAMED_KEYS = {"loss.ema_beta": "ema.beta", "loss.ema_warmup_steps": "ema.warmup_steps",
                    "augment.input_p": "loss.input_p", "augment.input_strength": "loss.input_strength",
                    "augment.ada_target": "augment.target", "augment.ada_p_max": "augment.p_max",
                    "augment.ada_p_init": "augment.p", "augment.ada_speed_kimg": "augment.speed_kimg",
                    "augment.ada_interval": "augment.interval", "augment.ada_pipeline": "augment.pipeline"}


# --- augmentation ----------------------------------------------------------------------------

def _gate(value: torch.Tensor, identity: float, p: float, g: torch.Generator | None) -> torch.Tensor:
    keep = torch.rand(value.shape, generator=g, device=value.device if g is None else g.device).to(value.device) < p
    return torch.where(keep, value, torch.full_like(value, identity))


def lowres_input_augment(x: torch.Tensor, p: float = 0.5, strength: float = 8.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Perturb the generator's low-res input (docs/METHODS.md 1.4); one draw per clip.

    x: [B, C, T, h, w] in [-1, 1] -> same shape. Each op is applied with probability p:
    isotropic scale 2^N(0, 0.01 s), rotation U(-1, 1) * 0.002 s * pi, anisotropic scale
    2^N(0, 0.01 s), sub-pixel shift N(0, 0.002 s) of the image size, additive Gaussian noise
    with std |N(0, 0.01 s)| (s = strength). Geometry is one bilinear resample with
    reflected edges, aspect-correct; p = 0 returns x unchanged.
    """
    if p <= 0:
        return x
    B, C, T, h, w = x.shape
    dev, dt = x.device, x.dtype
    g = generator

    def randn(*shape):
        return torch.randn(shape, generator=g, device=dev if g is None else g.device).to(dev, torch.float32)

    def rand(*shape):
        return torch.rand(shape, generator=g, device=dev if g is None else g.device).to(dev, torch.float32)

    s = 0.01 * strength
    scale = _gate(torch.exp2(randn(B) * s), 1.0, p, g)
    angle = _gate((rand(B) * 2 - 1) * math.pi * 0.2 * s, 0.0, p, g)
    aniso = _gate(torch.exp2(randn(B) * s), 1.0, p, g)
    shift = _gate(randn(B, 2) * 0.2 * s, 0.0, p, g)  # fraction of (width, height)
    sigma = _gate(randn(B).abs() * s, 0.0, p, g)

    # Output -> input pixel map in aspect-correct units (normalised x * w/2, y * h/2).
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [B, 2, 2]
    stretch = torch.diag_embed(torch.stack([scale * aniso, scale / aniso], -1))
    half = torch.tensor([w / 2, h / 2], device=dev)
    m = torch.diag(1 / half) @ (rot @ stretch) @ torch.diag(half)  # [B, 2, 2] in normalised coords
    theta = torch.cat([m, (2 * shift)[:, :, None]], dim=2)
    geom = (scale != 1) | (angle != 0) | (aniso != 1) | (shift != 0).any(1)
    frames = rearrange(x, "b c t h w -> b (c t) h w")
    grid = F.affine_grid(theta.to(dt), list(frames.shape), align_corners=False)
    warped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    frames = torch.where(geom[:, None, None, None], warped, frames)
    noise = torch.randn(frames.shape, generator=g, device=dev if g is None else g.device).to(dev, dt)
    frames = frames + noise * sigma.to(dt)[:, None, None, None]
    return rearrange(frames, "b (c t) h w -> b c t h w", c=C)


# --- data ----------------------------------------------------------------------------------

class _PairedClips(torch.utils.data.Dataset):
    """ClipDataset items {"HxW": ...} -> {"lowres": [C, T + 2K, h, w], "highres": [C, T, H, W]}
    (only the high-res frames the generator outputs are kept)."""

    def __init__(self, base, lowres: str, highres: str, context: int):
        self.base, self.lowres, self.highres, self.context = base, lowres, highres, context

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        K = self.context
        hr = item[self.highres]
        return {"lowres": item[self.lowres], "highres": hr[:, K:hr.shape[1] - K]}


# --- the recipe ----------------------------------------------------------------------------

class SuperResRecipe(Recipe):
    family = "lvg-superres"
    config_class = SuperResConfig
    mixed_precision = "fp16-layers"  # its reference (StyleGAN3 layers): float16 in the top resolutions, clamp 256

    def __init__(self, cfg: SuperResConfig, device: torch.device):
        super().__init__(cfg, device)
        m, a, l = cfg.model, cfg.augment, cfg.loss
        m.check()
        a.check(("ada", "none"))
        if not 0 <= l.input_p <= 1:
            raise ConfigError(f"loss.input_p must be in [0, 1]; got {l.input_p}")
        if l.r1_interval < 1:
            raise ConfigError(f"loss.r1_interval must be >= 1; got {l.r1_interval}")
        self.ada_ops = AdaOps.preset(a.pipeline)
        self.G = SuperResGenerator(m).to(device)
        self.D = SuperResDiscriminator(m).to(device)
        on = a.kind == "ada"  # with kind "none", p stays 0 and the augmentation is the identity
        self.ada = AdaController(target=a.target, speed_kimg=a.speed_kimg, interval=a.interval,
                                 p_init=a.p if on else 0.0, p_max=a.p_max if on else 0.0)
        self._sample_input: torch.Tensor | None = None

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        l = self.cfg.loss
        return {"G": OptimizerSpec(("G",), l.lr_g, betas=tuple(l.betas)),
                "D": OptimizerSpec(("D",), l.lr_d, betas=tuple(l.betas), reg_interval=l.r1_interval)}

    def ema(self) -> dict[str, EMASpec]:
        return {"G": self.cfg.ema}

    def dataset(self, random_start: bool = True) -> torch.utils.data.Dataset:
        """Clips of frames + 2K low-res frames with their high-res frames (random windows;
        ``random_start=False``: every window in order, for the log's samples)."""
        from vidgen.data.datasets import ClipDataset

        m, d = self.cfg.model, self.cfg.data
        if not d.path:
            raise ConfigError("data.path is empty; pass --data DIR (a prepared dataset or a folder of videos)")
        lo, hi = (f"{r[0]}x{r[1]}" for r in (m.lowres, m.highres))
        base = ClipDataset(d.path, clip_len=m.frames + 2 * m.context, stride=d.stride,
                           resolution=[tuple(m.lowres), tuple(m.highres)], random_start=random_start)
        return _PairedClips(base, lo, hi, m.context)

    # --- the phases ----------------------------------------------------------------------
    def _inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["lowres"], batch["highres"]  # [B, C, T + 2K, h, w], [B, C, T, H, W]

    def _augment_input(self, lowres: torch.Tensor) -> torch.Tensor:
        l = self.cfg.loss
        return lowres_input_augment(lowres, l.input_p, l.input_strength)

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.model.z_dim, device=self.device)

    def run_D(self, lowres: torch.Tensor, highres: torch.Tensor) -> torch.Tensor:
        """lowres: [B, C, T + 2K, h, w] (the generator's input); highres: [B, C, T, H, W]
        -> logits [B, 1]. ADA acts on both jointly; the conditioning is dropped w.p. 0.9."""
        K, T = self.cfg.model.context, highres.shape[2]
        lr_up = self.D.upsample_lowres(lowres[:, :, K:K + T])
        both = ada_augment(torch.cat([lr_up, highres], dim=2), self.ada.p, self.ada_ops)  # same parameters for both
        lr_up, highres = both[:, :, :T], both[:, :, T:]
        keep = torch.rand(lr_up.shape[0], 1, 1, 1, 1, device=lr_up.device) < self.cfg.loss.lr_cond_prob
        return self.D(lr_up * keep.to(lr_up.dtype), highres)

    def loss_g(self, batch, step: int):
        lowres, _ = self._inputs(batch)
        lowres = self._augment_input(lowres)
        logits = self.run_D(lowres, self.G(lowres, self._z(lowres.shape[0])))
        return ns_loss_g(logits).mean(), {"fake_score": logits.detach().mean()}

    def loss_d(self, batch, step: int):
        lowres, highres = self._inputs(batch)
        lr_fake, lr_real = self._augment_input(lowres), self._augment_input(lowres)
        with torch.no_grad():  # the generator's magnitude EMAs are updated here (StyleGAN3)
            fake = self.G(lr_fake, self._z(lowres.shape[0]), update_emas=True)
        fake_logits = self.run_D(lr_fake, fake)
        real_logits = self.run_D(lr_real, highres)
        self.ada.accumulate(real_logits)
        return ns_loss_d(real_logits, fake_logits).mean(), {
            "real_score": real_logits.detach().mean(), "fake_score": fake_logits.detach().mean(),
            "real_sign": real_logits.detach().sign().mean()}

    def loss_r1(self, batch, step: int):
        lowres, highres = self._inputs(batch)
        highres = highres.detach().requires_grad_(True)
        penalty = r1_penalty(self.run_D(self._augment_input(lowres), highres), highres)
        return penalty.mean() * (self.cfg.loss.r1_gamma / 2), {"r1": penalty.detach().mean()}

    def fp16_layers(self, num_fp16_res: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
        return (fp16_synthesis_layers(self.G.layers, max(self.cfg.model.highres), num_fp16_res)
                + self.D.fp16_layers(num_fp16_res))

    def phases(self) -> list[Phase]:
        return [Phase("G", "G", self.loss_g, ("G",)),
                Phase("D", "D", self.loss_d, ("D",)),
                Phase("Dreg", "D", self.loss_r1, ("D",), interval=self.cfg.loss.r1_interval)]

    # --- hooks ---------------------------------------------------------------------------
    def end_step(self, step: int, stats: dict[str, float]) -> None:
        self.ada.step(step)
        stats["augment/p"] = self.ada.p

    def state_dict(self) -> dict:
        return {"ada": self.ada.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "ada" in state:
            self.ada.load_state_dict(state["ada"])

    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor | None:
        """The first ``num`` clips of the dataset, super-resolved by the EMA generator with
        seeds seed, seed + 1, ...: [N, C, T, H, W] in [-1, 1]."""
        if self._sample_input is None:
            ds = self.dataset(random_start=False)
            self._sample_input = torch.stack([ds[i]["lowres"] for i in range(min(num, len(ds)))])
        G = nets["G"]
        lowres = self._sample_input[:num].to(self.device)
        z = torch.cat([G.latent(seed + i) for i in range(lowres.shape[0])])
        return G(lowres, z).clamp(-1, 1)

    def run_name(self) -> str:
        m, d = self.cfg.model, self.cfg.data
        data = Path(d.path).name or "data"
        return (f"lvg-superres-{data}-{m.lowres[0]}x{m.lowres[1]}to{m.highres[0]}x{m.highres[1]}"
                f"-b{self.cfg.engine.batch}")
