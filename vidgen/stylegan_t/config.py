"""The config of the StyleGAN-T family and the builders of its networks.

Presets (configs/stylegan-t/): ``tiny.yaml`` (trains in minutes on a CPU, 32x32, random
frozen feature networks), ``lite-64.yaml`` / ``full-64.yaml`` (the paper's generators at
64x64 with CLIP ViT-L/14 and DINO ViT-S/16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from vidgen.errors import ConfigError
from vidgen.nn.text import TextEncoderConfig, build_text_encoder
from vidgen.stylegan_t.discriminator import DiscriminatorConfig, ProjectedDiscriminator
from vidgen.stylegan_t.generator import Generator, GeneratorConfig
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig


@dataclass
class DataConfig:
    path: str = ""  # folder of images with .txt captions, a JSONL file, or a prepared dataset
    resolution: int = 64
    xflip: bool = False


@dataclass
class LossConfig:
    gan: Literal["ns", "hinge"] = "ns"  # non-saturating logistic, or the hinge loss of the reference release
    clip_weight: float = 0.0  # CLIP guidance: weight of the squared spherical distance (image, text)
    clip_crop: int = 64  # generated images larger than this are randomly cropped to it before CLIP
    blur_sigma: float = 0.0  # D's inputs are blurred, sigma fading linearly to 0 over blur_fade_kimg
    blur_fade_kimg: float = 0.0
    lr_G: float = 0.002
    lr_D: float = 0.002
    lr_text: float = 3e-6  # G.train_mode text_encoder: the learning rate of the text encoder
    betas: tuple[float, float] = (0.0, 0.99)


@dataclass
class SampleConfig:
    prompts: list[str] = field(default_factory=list)  # training samples and `vidgen eval`; [] = the run's captions
    psi: float = 1.0


@dataclass
class StyleGANTConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=100_000, batch=64, checkpoint_every=5000))
    data: DataConfig = field(default_factory=DataConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    G: GeneratorConfig = field(default_factory=GeneratorConfig)
    D: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # DiffAugment (colour, translation, cutout) on everything D sees, as the reference
    augment: AugmentSpec = field(default_factory=lambda: AugmentSpec(
        kind="diffaug", p=1.0, xflip=0.0, color=True, translation=0.125, cutout=0.5))
    # the reference: half-life batch * 10 / 32 kimg (20 kimg at batch 64), ramp-up 0.05
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="halflife", halflife_kimg=20.0, rampup=0.05))
    sample: SampleConfig = field(default_factory=SampleConfig)


def check_config(cfg: StyleGANTConfig) -> None:
    if cfg.G.img_resolution != cfg.data.resolution:
        raise ConfigError(f"G.img_resolution ({cfg.G.img_resolution}) must equal data.resolution ({cfg.data.resolution})")
    cfg.G.resolutions()
    cfg.augment.check(("diffaug", "none"))
    if cfg.loss.clip_weight > 0 and cfg.text.kind != "clip":
        raise ConfigError("loss.clip_weight > 0 needs a CLIP text encoder (text.kind: clip): the guidance "
                          "compares CLIP image and text embeddings")
    if cfg.loss.clip_weight < 0:
        raise ConfigError(f"loss.clip_weight must be >= 0; got {cfg.loss.clip_weight}")
    for res in cfg.G.resolutions():
        ch = cfg.G.channels(res)
        if ch % cfg.G.gn_groups:
            raise ConfigError(f"G: {ch} channels at {res}x{res} are not a multiple of G.gn_groups ({cfg.G.gn_groups})")


def build_generator(cfg: StyleGANTConfig, device: str | torch.device | None = None,
                    load_weights: bool = True) -> Generator:
    """G with its frozen text encoder. On ``device="meta"`` nothing is allocated or read;
    ``load_weights=False`` skips the published text-encoder weights (a state dict follows)."""
    meta = device is not None and torch.device(device).type == "meta"
    text = build_text_encoder(cfg.text, device="meta" if meta else None, load_weights=load_weights)
    if meta:
        with torch.device("meta"):
            return Generator(cfg.G, text)
    return Generator(cfg.G, text).to(device or "cpu")


def build_discriminator(cfg: StyleGANTConfig, c_dim: int, device: str | torch.device | None = None,
                        load_weights: bool = True) -> tuple[ProjectedDiscriminator, str]:
    """D and the SHA-256 of its DINO weight file ("" when random or not loaded)."""
    meta = device is not None and torch.device(device).type == "meta"
    if meta:
        with torch.device("meta"):
            return ProjectedDiscriminator(cfg.D, c_dim), ""
    D = ProjectedDiscriminator(cfg.D, c_dim)
    digest = D.dino.load_weights() if cfg.D.dino.pretrained and load_weights else ""
    return D.to(device or "cpu"), digest
