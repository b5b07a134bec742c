"""Seeds -> images: noise, class, guided sampling and decoding, one seed at a time in effect.

Every sample has its own generator seeded with its seed (:class:`SeedNoise`), from which its
initial noise [C, R, R], then its class (when the model is conditional and no class is
given), then any churn noise are drawn, in that order, as EDM's and EDM2's generate scripts
do: an image does not depend on the batch it was made in, and a deterministic sampler given
the reference's seeds and settings reproduces the reference's images. The result is decoded
by the run's encoder (vidgen/data/vae.py): pixels as ``clip(x * 127.5 + 128, 0, 255)``, latents
through the VAE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from vidgen.data.vae import LatentCodec
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, SeedNoise, sample
from vidgen.diffusion.text import prompt_tokens, text_encoder
from vidgen.errors import VidgenError


@dataclass
class Generated:
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: list[int | None]
    nfe: int  # main-network evaluations per batch
    guide_nfe: int


def generate_images(net, cfg, seeds: list[int], scfg: SamplerConfig, guide=None, use_cfg: bool = False,
                    class_idx: int | None = None, batch: int = 16, device="cpu", codec: LatentCodec | None = None,
                    progress=None, prompts: list[str] | None = None, text=None, paint=None) -> Generated:
    """Images of ``seeds`` from the denoiser ``net`` (config ``cfg``, a DiffusionConfig).
    ``guide``: a second denoiser (autoguidance, or with ``use_cfg`` the unconditional model of
    classifier-free guidance); ``use_cfg`` without a guide drops the class in ``net`` itself.
    A text-conditioned net takes ``prompts`` (one per seed) encoded by ``text``, and
    optionally ``paint`` (a PaintWithWords for those prompts' tokens; text.py)."""
    m = cfg.model
    codec = codec or LatentCodec(cfg.encoder, device)
    if class_idx is not None and not 0 <= class_idx < max(m.label_dim, 1):
        raise VidgenError(f"--class {class_idx}: the model has {m.label_dim} classes")
    images, labels, nfe, guide_nfe = [], [], 0, 0
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        rnd = SeedNoise(chunk, device)
        noise = rnd.randn([m.img_channels, m.img_resolution, m.img_resolution])
        lab = None
        if m.label_dim:
            lab = torch.full((len(chunk),), class_idx, device=device) if class_idx is not None else rnd.randint(m.label_dim)
        tokens = prompt_tokens(text, prompts[i:i + batch]).to(device) if prompts is not None else None
        den = GuidedDenoiser(net, guide=guide, cfg=use_cfg, guidance=scfg.guidance, interval=scfg.interval, labels=lab,
                             tokens=tokens, extra={"paint": paint} if paint is not None else {})
        with torch.no_grad():
            x = sample(den, noise, scfg, step_noise=rnd)
            pixels = codec.decode(x)  # uint8 [B, 3, H, W]
        images.append(rearrange(pixels.cpu().numpy(), "b c h w -> b h w c"))
        labels += lab.tolist() if lab is not None else [None] * len(chunk)
        nfe, guide_nfe = den.nfe, den.guide_nfe
        if progress is not None:
            progress(len(chunk))
    return Generated(np.concatenate(images), labels, nfe, guide_nfe)


def sampler_config(cfg, **overrides) -> SamplerConfig:
    """The run's ``sample`` section with the given fields replaced (None: keep)."""
    return dataclasses.replace(cfg.sample, **{k: v for k, v in overrides.items() if v is not None})


class DiffusionSampler:
    """The family's :class:`vidgen.registry.Sampler`: ``generate(seed, n)`` -> the uint8 images
    [n, H, W, 3] of seeds seed .. seed + n - 1 with the run's sampler settings (the config's
    ``sample`` section), exactly what `vidgen diffusion sample` makes for those seeds. With
    ``sample.guidance`` != 1 and no ``guide``, the guidance is classifier-free through the net
    itself (its label dropped), as `vidgen diffusion sample --cfg` does. A text-conditioned
    net's image s uses prompt s mod (number of prompts) of the captions stored with the run."""

    kind = "image"

    def __init__(self, path, device="cpu", guide=None, **sampler_overrides):
        from vidgen.diffusion.load import load_denoiser
        from vidgen.train.checkpoint import Checkpoint, read_checkpoint
        self.device = torch.device(device)
        self.net, self.cfg = load_denoiser(path, self.device)
        self.guide = load_denoiser(guide, self.device)[0] if guide else None
        self.scfg = sampler_config(self.cfg, **sampler_overrides)
        self.use_cfg = self.guide is None and self.scfg.guidance != 1
        if self.use_cfg and (not self.cfg.model.label_dim or self.cfg.loss.label_dropout <= 0):
            why = "unconditional" if not self.cfg.model.label_dim else "trained without label dropout"
            raise VidgenError(f"sample.guidance is {self.scfg.guidance} but the net is {why}, so it has no "
                              "unconditional mode for classifier-free guidance; sample with `vidgen diffusion "
                              "sample --guide` and evaluate the image folder, or set sample.guidance=1")
        self.codec = LatentCodec(self.cfg.encoder, self.device)
        self.text, self.prompts = None, None  # a text-conditioned net: image s gets prompt s mod len(prompts)
        if self.cfg.data.captions:
            self.text = text_encoder(self.cfg, self.device)
            c = path if isinstance(path, Checkpoint) else read_checkpoint(path) if Path(path).is_dir() else None
            stored = (c.state.get("recipe") or {}).get("prompts") if c is not None else None
            self.prompts = list(stored or ["a photograph"])
        side = self.cfg.data.resolution if self.cfg.encoder.kind == "vae" else self.cfg.model.img_resolution
        self.frame_size = (side, side)
        names = path.network_names if isinstance(path, Checkpoint) else ()
        # what a report records next to its numbers (vidgen eval)
        self.info = {"network": "net_ema" if "net_ema" in names or not names else "net",
                     "step": path.step if isinstance(path, Checkpoint) else None,
                     "labels": "drawn from each seed's generator" if self.cfg.model.label_dim else None,
                     "guidance": "cfg" if self.use_cfg else ("guide" if self.guide is not None else None),
                     "sampler": {k: (v if not isinstance(v, float) or np.isfinite(v) else str(v))
                                 for k, v in dataclasses.asdict(self.scfg).items()}}

    def generate(self, seed: int, n: int) -> np.ndarray:
        seeds = list(range(seed, seed + n))
        prompts = [self.prompts[s % len(self.prompts)] for s in seeds] if self.prompts else None
        return generate_images(self.net, self.cfg, seeds, self.scfg, guide=self.guide, use_cfg=self.use_cfg,
                               device=self.device, codec=self.codec, prompts=prompts, text=self.text).images


def open_sampler(checkpoint, device="cpu") -> DiffusionSampler:
    """``Family.sampler`` of the diffusion family."""
    return DiffusionSampler(checkpoint, device)
