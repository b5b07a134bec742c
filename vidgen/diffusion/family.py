"""The diffusion family's sampler (`vidgen.registry.Sampler`) for `vidgen eval --fake RUN`.

Image `seed` is what `vidgen diffusion sample --net RUN --seeds SEED` draws with the run's own
sampler settings (the config's `sample` section: steps, solver, sigma range, rho, churn,
guidance, interval): the EMA network (`net_ema`, else `net`), initial noise N(0, I) from
`seed`, class `seed mod label_dim` for a class-conditional net. Guidance (`sample.guidance`
!= 1) is classifier-free guidance, the only guide a single run has; an unconditional run
with guidance is refused (autoguidance needs a second network: render with
`vidgen diffusion sample --guide` and evaluate the image folder). A stochastic sampler
(`sample.churn` > 0) draws its noise from a generator seeded by the first seed of each call.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from vidgen.config import config_from_dict
from vidgen.errors import ConfigError
from vidgen.render.writer import to_uint8_frames
from vidgen.diffusion.recipe import DiffusionConfig
from vidgen.diffusion.sample import GuidedDenoiser, sample
from vidgen.diffusion.unet import build_denoiser


class DiffusionSampler:
    kind = "image"

    def __init__(self, net, cfg: DiffusionConfig, network: str, step: int, batch: int = 16):
        m = cfg.model
        if m.img_channels != 3:
            raise ConfigError(f"model.img_channels is {m.img_channels}: a latent-space net needs its VAE "
                              "decoder, which `vidgen eval` does not run yet; decode its samples into an "
                              "image folder and evaluate that")
        self.net, self.m, self.scfg, self.batch = net, m, cfg.sample, batch
        self.scfg.check()
        self.cfg_guidance = self.scfg.guidance != 1
        if self.cfg_guidance and not m.label_dim:
            raise ConfigError(f"sample.guidance is {self.scfg.guidance} but the net is unconditional: "
                              "classifier-free guidance needs classes (autoguidance needs a guide network: "
                              "sample with `vidgen diffusion sample --guide` and evaluate the image folder)")
        self.frame_size = (m.img_resolution, m.img_resolution)
        self.info = {"network": network, "step": step, "labels": "seed mod label_dim" if m.label_dim else None,
                     "guidance": "cfg" if self.cfg_guidance else None,
                     "sampler": {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                                 for k, v in dataclasses.asdict(self.scfg).items()}}

    @torch.no_grad()
    def generate(self, seed: int, n: int) -> np.ndarray:
        """Images of seeds seed..seed+n-1: uint8 [n, R, R, 3]."""
        m, dev = self.m, next(self.net.parameters()).device
        out = []
        for a in range(int(seed), int(seed) + n, self.batch):
            seeds = range(a, min(a + self.batch, int(seed) + n))
            noise = torch.stack([torch.randn(m.img_channels, m.img_resolution, m.img_resolution,
                                             generator=torch.Generator().manual_seed(s)) for s in seeds]).to(dev)
            labels = torch.tensor([s % m.label_dim for s in seeds], device=dev) if m.label_dim else None
            den = GuidedDenoiser(self.net, cfg=self.cfg_guidance, guidance=self.scfg.guidance,
                                 interval=self.scfg.interval, labels=labels)
            gen = torch.Generator(device=dev).manual_seed(a) if self.scfg.churn > 0 else None
            x = sample(den, noise, self.scfg, generator=gen)
            out.append(to_uint8_frames(x[:, :3].clamp(-1, 1).float(), layout="TCHW"))
        return np.concatenate(out)


def open_sampler(ckpt, device: str | torch.device = "cpu") -> DiffusionSampler:
    """`vidgen.registry` sampler factory: (verified checkpoint, device) -> DiffusionSampler."""
    from vidgen.train.checkpoint import load_network

    cfg = config_from_dict(DiffusionConfig, ckpt.config)
    names = ("net_ema", "net")
    network = next((n for n in names if n in ckpt.network_names), "net")
    net = load_network(ckpt, names, lambda _: build_denoiser(cfg.model, sigma_data=cfg.loss.sigma_data), device)
    return DiffusionSampler(net.eval().requires_grad_(False), cfg, network, ckpt.step)
