"""Training recipe of the time-lapse GAN for vidgen's engine (docs/METHODS.md section 2).

One step: G (non-saturating loss, style mixing), Greg every 4 steps (path length, weight 2),
D (non-saturating loss), Dreg every 16 steps (R1, gamma = (res / 256)^2). A regulariser whose
weight is 0 has no phase, and its optimiser no lazy-regularisation compensation. Every real and
generated t is dequantised (with ``time.dequantize_day`` false, except for its time of day);
the discriminator additionally sees per-factor noise on t.
Adaptive augmentation (ADA, target 0.6; the pipeline of ``augment.pipeline``, 'bgc' by default)
is applied to everything D sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vidgen.config import NonNegativeInt, PositiveFloat
from vidgen.errors import ConfigError
from vidgen.nn.fp16 import fp16_octave
from vidgen.train.ada import AdaController, AdaOps, ada_augment
from vidgen.train.gan import PathLengthRegularizer, ns_loss_d, ns_loss_g, r1_penalty
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig, OptimizerSpec, Phase, Recipe
from timelapse.frames import TimelapseFrames
from timelapse.model import Discriminator, Generator, ModelConfig
from timelapse.time import TimeAxis, TimeNoise, d_noise, dequant_sigmas, dequantize, factor_times


@dataclass
class DataConfig:
    path: str = ""
    time_pattern: str = ""  # strftime pattern of the file names; "" = automatic
    skip: list[str] = field(default_factory=list)  # ranges of bad frames "FIRST:STOP" (capture order)
    start: str = ""     # a time-lapse video: capture time of its first frame; "" = its creation time
    interval: str = ""  # a time-lapse video: time between frames, e.g. "60s"; "" = not a video
    align: bool = False  # register the frames of a raw folder / video and crop to the common area


@dataclass
class TimeConfig:
    # The time axis: t = 0 at ``start`` (epoch seconds, UTC), t = 1 after ``num_days`` days.
    # num_days 0: from the data (00:00 UTC of the first capture day, the span rounded up to
    # whole days); the run's config then records it, so --resume and --init keep it.
    start: float = 0.0
    num_days: int = 0
    lin_scale: float = 0.01  # c holds lin_scale * t
    # K > 0: c also holds lin_scale * (cos pi k t, sin pi k t), k = 1..K, so the trend can bend
    # over the sequence (not in the method; for footage of days or weeks, docs/TIMELAPSE.md)
    trend_harmonics: NonNegativeInt = 0
    dequantize: bool = True  # N(0, (0.5 * largest gap)^2) on every real and generated t
    # False: the noise moves the trend and the year only; each frame keeps its exact time of
    # day (for sequences sampled hours apart, where the noise would blur the daily phase)
    dequantize_day: bool = True
    d_noise_trend: float = 0.2  # D's view of t: trend sigma, fraction of the sequence
    d_noise_year_days: float = 4.0
    d_noise_day_days: float = 0.0


@dataclass
class LossConfig:
    lr: PositiveFloat = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = -1.0  # < 0: (resolution / 256)^2
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    style_mixing: float = 0.9


@dataclass
class TimelapseConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    time: TimeConfig = field(default_factory=TimeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # ADA on D's images (StyleGAN2-ADA defaults); the G EMA has a 10 kimg half-life
    augment: AugmentSpec = field(default_factory=lambda: AugmentSpec(
        kind="ada", pipeline="bgc", target=0.6, speed_kimg=500.0, interval=4))
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="halflife", halflife_kimg=10.0, rampup=0.05))

    RENAMED_KEYS = {"loss.augment": "augment.kind", "loss.ada_target": "augment.target",
                    "loss.ada_kimg": "augment.speed_kimg", "loss.ada_interval": "augment.interval",
                    "loss.ada_pipeline": "augment.pipeline", "loss.ema_kimg": "ema.halflife_kimg",
                    "loss.ema_rampup": "ema.rampup"}
    RENAMED_VALUES = {"loss.augment": {"off": "none"}}


def reg_intervals(L: LossConfig, r1_gamma: float) -> dict[str, int]:
    """Steps between the lazy regulariser phases of G (path length) and D (R1); 0 where a
    network has none because its weight is 0."""
    out = {}
    for net, weight, key in (("G", L.pl_weight, "pl"), ("D", r1_gamma, "r1")):
        k = getattr(L, f"{key}_interval")
        if weight > 0 and k < 1:
            off = "pl_weight=0" if key == "pl" else "r1_gamma=0"
            raise ConfigError(f"loss.{key}_interval must be >= 1 (got {k}); set loss.{off} to turn that "
                              "regulariser off")
        out[net] = k if weight > 0 else 0
    return out


def time_axis(tc: TimeConfig, data: TimelapseFrames | None) -> TimeAxis:
    """The run's time axis: the config's when it has one, else the data's, which is then
    written into the config. The data's times are normalised on the run's axis."""
    if tc.num_days <= 0:
        if data is None:
            raise ConfigError("timelapse: no time axis; give --data DIR (or time.start and time.num_days)")
        tc.start, tc.num_days = float(data.axis.start), int(data.axis.num_days)
    axis = TimeAxis(float(tc.start), int(tc.num_days), tc.lin_scale, tc.trend_harmonics)
    if data is not None:
        if (data.axis.start, data.axis.num_days) != (axis.start, axis.num_days):
            # e.g. fine-tuning an imported network on its sequence
            data.t = axis.normalize(data.seconds).astype(np.float32)
            data.sigma = dequant_sigmas(data.t).astype(np.float32)
        data.axis = axis
    return axis


class TimelapseRecipe(Recipe):
    family = "timelapse"
    config_class = TimelapseConfig
    mixed_precision = "fp16-layers"  # StyleGAN2: float16 in the top num_fp16_res resolutions, clamp 256

    def __init__(self, cfg: TimelapseConfig, device: torch.device, dataset: TimelapseFrames | None = None):
        super().__init__(cfg, device)
        self.data = dataset
        if self.data is None and cfg.data.path:
            self.data = TimelapseFrames(cfg.data.path, cfg.model.resolution, cfg.data.skip, cfg.data.time_pattern,
                                        start=cfg.data.start, interval=cfg.data.interval, align=cfg.data.align)
        axis = time_axis(cfg.time, self.data)
        rect = self.data.rect if self.data is not None else None
        self.G = Generator(cfg.model, axis, rect).to(device)
        self.D = Discriminator(cfg.model, axis).to(device)
        self.pl = PathLengthRegularizer().to(device)
        L = cfg.loss
        a = cfg.augment
        a.check(("ada", "none"))
        self.ada = AdaController(a.target, a.speed_kimg, a.interval, p_init=a.p, p_max=a.p_max) \
            if a.kind == "ada" else None
        self.ada_ops = AdaOps.preset(a.pipeline)
        if self.data is not None:
            self.t_all = torch.as_tensor(self.data.t, device=device)
            self.sigma_all = torch.as_tensor(self.data.sigma, device=device)
        tn = cfg.time
        self.d_sigmas = TimeNoise(tn.d_noise_trend, tn.d_noise_year_days, tn.d_noise_day_days).sigmas(axis)
        res = cfg.model.resolution
        self.r1_gamma = L.r1_gamma if L.r1_gamma >= 0 else (res / 256) ** 2
        self.reg_k = reg_intervals(L, self.r1_gamma)

    # --- what the engine trains ---------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        # StyleGAN2 lazy regularisation: lr and betas are compensated for a regulariser every
        # k steps only when that phase exists; with its weight 0 there is none (StyleGAN3 too).
        L, k = self.cfg.loss, self.reg_k
        return {net: OptimizerSpec((net,), L.lr, tuple(L.betas), reg_interval=max(k[net], 1)) for net in ("G", "D")}

    def phases(self) -> list[Phase]:
        k = self.reg_k
        out = [Phase("G", "G", self.loss_g, ("G",))]
        if k["G"] > 0:
            out.append(Phase("Greg", "G", self.loss_greg, ("G",), k["G"]))
        out.append(Phase("D", "D", self.loss_d, ("D",)))
        if k["D"] > 0:
            out.append(Phase("Dreg", "D", self.loss_dreg, ("D",), k["D"]))
        return out

    def ema(self) -> dict[str, EMASpec]:
        return {"G": self.cfg.ema}

    def fp16_layers(self, num_fp16_res: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
        R, n = self.cfg.model.resolution, num_fp16_res
        out = [(conv, (0,)) for conv in self.G.convs if fp16_octave(conv.res, R, n)]
        out += [(rgb, (0,)) for rgb, res in zip(self.G.torgbs, self.G.res_list) if fp16_octave(res, R, n)]
        d_res = [R >> i for i in range(len(self.D.blocks))]  # each D block's input resolution
        return out + [(block, (0, 1)) for block, res in zip(self.D.blocks, d_res) if fp16_octave(res, R, n)]

    def statistics(self) -> dict[str, nn.Module]:
        return {"pl": self.pl}  # the path-length target

    def dataset(self) -> torch.utils.data.Dataset:
        if self.data is None:
            raise ConfigError("timelapse train needs --data DIR (a prepared dataset or a folder of time-stamped frames)")
        return self.data

    # --- pieces of the losses ------------------------------------------------------------
    @property
    def p(self) -> float:
        return self.ada.p if self.ada is not None else 0.0

    def dequant(self, t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """t: [B] -> [B] or, when the time of day is kept exact, [B, F] (one t per factor)."""
        tc = self.cfg.time
        if not tc.dequantize:
            return t
        noisy = dequantize(t, sigma)
        factors = self.G.axis.factors
        if tc.dequantize_day or "day" not in factors:
            return noisy
        out = factor_times(noisy, len(factors)).clone()
        out[:, factors.index("day")] = t
        return out

    def real(self, micro):
        img, t, sigma = (x.to(self.device) for x in micro[:3])
        return img, self.dequant(t.to(img.dtype), sigma)

    def gen_times(self, n: int) -> torch.Tensor:
        """Generated t: capture times of random frames, dequantised like the real ones."""
        idx = torch.randint(len(self.t_all), (n,), device=self.t_all.device)
        t = self.t_all[idx]
        return self.dequant(t, self.sigma_all[idx])

    def gen_ws(self, n: int, update_w_avg: bool = False) -> torch.Tensor:
        G = self.G
        ws = G.map(torch.randn(n, G.cfg.z_dim, device=self.device), update_w_avg=update_w_avg)
        if self.cfg.loss.style_mixing > 0:  # StyleGAN2: a second z from a random layer on
            cut = torch.randint(1, G.num_ws, ()).item()
            if torch.rand(()).item() < self.cfg.loss.style_mixing:
                ws2 = G.map(torch.randn(n, G.cfg.z_dim, device=self.device))
                ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
        return ws

    def run_d(self, img: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # D sees augmented images and per-factor noisy times (docs/METHODS.md 2 (b), applied).
        return self.D(ada_augment(img, self.p, self.ada_ops), d_noise(t, self.d_sigmas))

    # --- phases ------------------------------------------------------------------------
    def loss_g(self, micro, step: int):
        n = micro[0].shape[0]
        t = self.gen_times(n)
        fake = self.G.synthesis(self.gen_ws(n, update_w_avg=True), t)
        logits = self.run_d(fake, t)
        loss = ns_loss_g(logits).mean()
        return loss, {"loss/G": float(loss.detach()), "logits/fake": float(logits.detach().mean())}

    def loss_greg(self, micro, step: int):
        n = max(micro[0].shape[0] // self.cfg.loss.pl_batch_shrink, 1)
        ws = self.gen_ws(n)
        fake = self.G.synthesis(ws, self.gen_times(n))
        pen = self.pl(fake, ws)
        return pen.mean() * self.cfg.loss.pl_weight, {"loss/pl": float(pen.detach().mean()), "pl_mean": float(self.pl.pl_mean)}

    def loss_d(self, micro, step: int):
        img, t_real = self.real(micro)
        n = img.shape[0]
        with torch.no_grad():
            t_fake = self.gen_times(n)
            fake = self.G.synthesis(self.gen_ws(n), t_fake)
        logits_fake = self.run_d(fake, t_fake)
        logits_real = self.run_d(img, t_real)
        if self.ada is not None:
            self.ada.accumulate(logits_real)
        loss = ns_loss_d(logits_real, logits_fake).mean()
        return loss, {"loss/D": float(loss.detach()), "logits/real": float(logits_real.detach().mean()),
                      "ada/p": self.p, "ada/rt": float(torch.sign(logits_real.detach()).mean())}

    def loss_dreg(self, micro, step: int):
        img, t_real = self.real(micro)
        img = img.detach().requires_grad_(True)
        logits = self.run_d(img, t_real)
        r1 = r1_penalty(logits, img)
        return r1.mean() * (self.r1_gamma / 2), {"loss/r1": float(r1.detach().mean())}

    # --- hooks ---------------------------------------------------------------------------
    def end_step(self, step: int, stats: dict[str, float]) -> None:
        if self.ada is not None:
            self.ada.step(step)

    def state_dict(self) -> dict:
        out = {"pl_mean": self.pl.pl_mean.detach().clone(), "time_axis": self.G.axis.to_dict()}
        if self.data is not None:  # the training frames' times, for equal-time evaluation (timelapse/family.py)
            out["capture_seconds"] = torch.from_numpy(np.asarray(self.data.seconds, dtype=np.float64))
        if self.ada is not None:
            out["ada"] = self.ada.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        if "pl_mean" in state:
            self.pl.pl_mean.copy_(torch.as_tensor(state["pl_mean"]))
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])

    @torch.no_grad()
    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor | None:
        G = nets.get("G_ema", nets.get("G"))
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num, G.cfg.z_dim, generator=gen).to(self.device)
        t = torch.linspace(0, 1, num, device=self.device)  # spread over the sequence
        return G(z, t, noise="const").clamp(-1, 1)

    def run_name(self) -> str:
        name = Path(self.cfg.data.path).name or "data"
        r = self.cfg.model.resolution
        return f"timelapse-{name}-{r}x{r}-b{self.cfg.engine.batch}"
