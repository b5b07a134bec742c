"""Trained and imported StyleGAN-T generators as samplers (`vidgen t2i`, `vidgen eval --fake`).

Latents follow the reference's gen_images.py: seed ``s`` gives
``z = np.random.RandomState(s).randn(1, z_dim)``, so a seed shows the same image as there.
Prompts for `vidgen eval --fake RUN` (which passes none): the run's ``sample.prompts``, else
the captions stored with its checkpoint (up to 256 spread over the training data), else
:data:`DEFAULT_PROMPTS`; image ``s`` uses prompt ``s mod len(prompts)``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vidgen.config import config_from_dict
from vidgen.errors import VidgenError
from vidgen.render.writer import to_uint8_frames
from vidgen.stylegan_t.config import StyleGANTConfig, build_discriminator, build_generator
from vidgen.stylegan_t.discriminator import ProjectedDiscriminator
from vidgen.stylegan_t.generator import Generator
from vidgen.train.checkpoint import Checkpoint, load_network, read_checkpoint

DEFAULT_PROMPTS = (
    "a photograph of a mountain lake at sunrise", "a red sports car parked on a city street",
    "a bowl of fruit on a wooden table", "a painting of a lighthouse in a storm",
    "a cat sleeping on a sofa", "an astronaut riding a horse", "a snowy forest at night",
    "a plate of pasta with tomato sauce",
)


def open_checkpoint(path: str | os.PathLike | Checkpoint) -> tuple[Checkpoint, StyleGANTConfig]:
    c = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    if c.family != "stylegan-t":
        raise VidgenError(f"{c.path} is a {c.family!r} checkpoint, not a stylegan-t one")
    return c, config_from_dict(StyleGANTConfig, c.config)


def load_generator(path: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu",
                   networks: tuple[str, ...] = ("G_ema", "G")) -> tuple[Generator, StyleGANTConfig, Checkpoint]:
    """The generator (EMA copy first) of a run or checkpoint folder, in eval mode. Its text
    encoder's weights come from the checkpoint: no weight file is read."""
    c, cfg = open_checkpoint(path)
    G = load_network(c, networks, lambda _: build_generator(cfg, load_weights=False), device)
    return G.eval().requires_grad_(False), cfg, c


def load_discriminator(path: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu") -> ProjectedDiscriminator:
    """The discriminator of a run or checkpoint folder, in eval mode (DINO weights from the checkpoint)."""
    c, cfg = open_checkpoint(path)
    c_dim = build_generator(cfg, "meta").c_dim
    D = load_network(c, "D", lambda _: build_discriminator(cfg, c_dim, load_weights=False)[0], device)
    return D.eval().requires_grad_(False)


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """[len(seeds), z_dim] float32: ``RandomState(seed).randn(1, z_dim)`` per seed."""
    return torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds])).float()


def run_prompts(c: Checkpoint, cfg: StyleGANTConfig) -> list[str]:
    if cfg.sample.prompts:
        return list(cfg.sample.prompts)
    stored = (c.state.get("recipe") or {}).get("prompts") or []
    return list(stored) if stored else list(DEFAULT_PROMPTS)


class StyleGANTSampler:
    """``generate(seed, n)``: images of seeds seed .. seed + n - 1 (uint8 [n, H, W, 3])."""

    kind = "image"

    def __init__(self, G: Generator, prompts: list[str], psi: float = 1.0, noise: str = "const", batch: int = 16):
        if not prompts:
            raise VidgenError("StyleGAN-T sampling needs at least one prompt")
        self.G, self.prompts, self.psi, self.noise, self.batch = G, list(prompts), psi, noise, batch
        r = G.img_resolution
        self.frame_size = (r, r)
        self.info = {"psi": psi, "noise": noise, "prompts": len(self.prompts), "first_prompt": self.prompts[0]}

    @property
    def device(self) -> torch.device:
        return next(self.G.synthesis.parameters()).device

    @torch.no_grad()
    def images(self, seeds: list[int], prompts: list[str], psi: float | None = None) -> torch.Tensor:
        """float [N, 3, H, W] in [-1, 1] for paired seeds and prompts."""
        out = []
        for i in range(0, len(seeds), self.batch):
            z = seed_latents(seeds[i:i + self.batch], self.G.z_dim).to(self.device)
            x = self.G(z, prompts[i:i + self.batch], psi=self.psi if psi is None else psi, noise=self.noise)
            out.append(x.clamp(-1, 1).cpu())
        return torch.cat(out)

    def generate(self, seed: int, n: int) -> np.ndarray:
        seeds = list(range(seed, seed + n))
        return to_uint8_frames(self.images(seeds, [self.prompts[s % len(self.prompts)] for s in seeds]),
                               layout="TCHW")


def open_sampler(checkpoint, device: str | torch.device = "cpu") -> StyleGANTSampler:
    """The registry's sampler entry point: a run / checkpoint folder -> sampler (psi from
    the run's ``sample.psi``)."""
    G, cfg, c = load_generator(checkpoint, device)
    return StyleGANTSampler(G, run_prompts(c, cfg), psi=cfg.sample.psi)
