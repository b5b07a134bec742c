"""The typed config of a diffusion run (its YAML sections: engine, data, model, precond,
encoder, text, loss, optim, ema, augment, sample, init)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vidgen.config import NonNegativeInt, PositiveFloat, PositiveInt
from vidgen.data.vae import EncoderConfig
from vidgen.diffusion.edm import LossConfig
from vidgen.diffusion.precond import PrecondConfig
from vidgen.diffusion.sample import SamplerConfig
from vidgen.diffusion.unet import UNetConfig
from vidgen.nn.text import TextEncoderConfig
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig


@dataclass
class DiffusionDataConfig:
    path: str = ""
    resolution: PositiveInt = 32  # square side; images are centre-cropped and resized
    class_from_folder: bool = False  # label = sub-folder (clip) index; needs model.label_dim = #folders
    xflip: bool = False
    latents: bool = False  # train on DIR/latents-RxR/ (vidgen data prepare --latents); resolution: the pixels'
    captions: bool = False  # captioned images (vidgen/data/captions.py); the net cross-attends to their tokens


@dataclass
class OptimConfig:
    lr: PositiveFloat = 0.0100  # alpha_ref (EDM2: 0.0120 XS ... 0.0065 XXL)
    schedule: Literal["inv_sqrt", "constant"] = "inv_sqrt"  # EDM2's decay, or EDM's constant rate after the ramp-up
    ref_steps: PositiveInt = 70000  # t_ref of lr = alpha_ref / sqrt(max(t / t_ref, 1))
    rampup_steps: NonNegativeInt = 0
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class DiffusionConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=2000, batch=32))
    data: DiffusionDataConfig = field(default_factory=DiffusionDataConfig)
    model: UNetConfig = field(default_factory=lambda: UNetConfig(preset="tiny", img_resolution=32,
                                                                 img_channels=3, label_dim=0))
    precond: PrecondConfig = field(default_factory=PrecondConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # pixels <-> model space (vidgen/data/vae.py)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)  # with data.captions (vidgen/nn/text.py)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="power", sigma_rels=(0.05, 0.10), snapshot_every=0))
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # kind "none" only (data.xflip flips real images)
    sample: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=32))
    init: str = ""  # checkpoint / reconstruction to start from (fine-tuning a noise-range expert)
