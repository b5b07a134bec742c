"""EDM / EDM2 training on the shared engine (docs/METHODS.md sections 3-4).

Data: a folder of images, a folder of frame folders / videos, or a prepared dataset, read
through ``vidgen.data.datasets.ClipDataset`` one frame at a time; with
``data.class_from_folder`` the class of an image is the index of its sub-folder (clip).
With ``data.latents`` the model trains in a VAE's latent space on the latents that
``vidgen data prepare --latents VAE`` wrote for the pixel resolution ``data.resolution``
(vidgen/data/vae.py): the ``encoder`` section is completed from that dataset (the VAE, the
SHA-256 of its weights, the measured raw statistics) unless it sets them, so the run's
config says how to decode its samples. With ``data.captions`` the data are captioned images
and the net cross-attends to the tokens of their captions (text.py). Loading trained
denoisers: load.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vidgen.data.vae import LatentCodec
from vidgen.diffusion.config import DiffusionConfig, DiffusionDataConfig
from vidgen.diffusion.edm import edm_loss
from vidgen.diffusion.load import load_weights
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, sample
from vidgen.diffusion.text import CaptionItems, prompt_tokens, text_encoder
from vidgen.diffusion.unet import build_denoiser
from vidgen.errors import ConfigError
from vidgen.train.recipe import EMASpec, OptimizerSpec, Phase, Recipe
from vidgen.train.sidecar import load_network_state


class ImageItems(torch.utils.data.Dataset):
    """Every frame of every clip as {"x": [3, R, R] in [-1, 1], "label": clip index}."""

    def __init__(self, cfg: DiffusionDataConfig):
        from vidgen.data.datasets import ClipDataset
        if not cfg.path:
            raise ConfigError("data.path: give an image folder, a folder of frame folders / videos, or a prepared dataset")
        self.base = ClipDataset(cfg.path, clip_len=1, resolution=(cfg.resolution, cfg.resolution), random_start=False)
        self.num_classes = len(self.base.sources.clips)
        self.xflip = cfg.xflip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        x = self.base[i][:, 0]  # [3, R, R]
        if self.xflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"x": x, "label": self.base.windows[i][0]}


class LatentItems(torch.utils.data.Dataset):
    """Raw latents of every frame (vidgen/data/latents.py) as {"raw": [2C, r, r], "label"};
    completes ``cfg.encoder`` from the dataset and checks the model's shape against it."""

    def __init__(self, cfg: "DiffusionConfig"):
        from vidgen.data.latents import LatentDataset
        if not cfg.data.path:
            raise ConfigError("data.path: give a prepared dataset with latents (vidgen data prepare --latents VAE)")
        r = cfg.data.resolution
        self.base = LatentDataset(cfg.data.path, f"{r}x{r}")
        self.num_classes = self.base.num_classes
        info, enc, m = self.base.info, cfg.encoder, cfg.model
        c, h, w = info["latent_shape"]
        if (m.img_channels, m.img_resolution) != (c, h) or h != w:
            raise ConfigError(f"model.img_channels / model.img_resolution are {m.img_channels} / {m.img_resolution}, "
                              f"the latents of {cfg.data.path} at {r}x{r} are {c} x {h}x{w}; set them to match")
        if enc.vae_sha256 and enc.vae_sha256 != info["vae_sha256"]:
            raise ConfigError(f"encoder.vae_sha256 is {enc.vae_sha256}, but {cfg.data.path} was encoded with VAE "
                              f"weights {info['vae_sha256']}")
        enc.vae = enc.vae or info["vae"]
        enc.vae_sha256 = info["vae_sha256"]
        if enc.scale is None and enc.raw_mean is None:
            enc.raw_mean, enc.raw_std = tuple(info["raw_mean"]), tuple(info["raw_std"])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        raw, label = self.base[i]
        return {"raw": raw, "label": label}


class DiffusionRecipe(Recipe):
    family = "diffusion"
    config_class = DiffusionConfig
    mixed_precision = "bf16"  # EDM2: bfloat16 autocast (float16 with loss scaling without bfloat16)

    def __init__(self, cfg: DiffusionConfig, device: torch.device):
        super().__init__(cfg, device)
        cfg.augment.check(("none",))
        if cfg.data.latents:
            if cfg.data.xflip:
                raise ConfigError("data.xflip: flipping latents is not flipping images; encode flipped images instead")
            cfg.encoder.kind = "vae"
        elif cfg.encoder.kind == "vae":
            raise ConfigError("encoder.kind 'vae' trains on latents: set data.latents: true (and encode the dataset "
                              "with `vidgen data prepare --latents VAE`)")
        elif cfg.model.img_resolution != cfg.data.resolution:
            raise ConfigError(f"model.img_resolution ({cfg.model.img_resolution}) must equal data.resolution "
                              f"({cfg.data.resolution})")
        self.codec = LatentCodec(cfg.encoder, device)
        self.net = build_denoiser(cfg.model, sigma_data=cfg.loss.sigma_data, precond=cfg.precond).to(device)
        if cfg.loss.uncertainty and not self.net.has_logvar:
            raise ConfigError("loss.uncertainty needs the uncertainty head: set model.logvar_channels (e.g. 128) "
                              "or loss.uncertainty: false")
        if cfg.init:
            state, _ = load_weights(cfg.init)
            load_network_state(self.net, state, f"init={cfg.init}")
        self.text = None  # the frozen text encoder of a captioned run (text.py)
        self.texts: list[str] = []
        if cfg.data.captions:
            if cfg.data.latents:
                raise ConfigError("data.captions with data.latents is not supported; train on captioned images")
            self.text = text_encoder(cfg, device)

    def networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        o = self.cfg.optim
        return {"net": OptimizerSpec(("net",), o.lr, betas=tuple(o.betas), schedule=o.schedule,
                                     ref_steps=o.ref_steps, rampup_steps=o.rampup_steps)}

    def phases(self) -> list[Phase]:
        return [Phase("denoise", "net", self.loss, ("net",))]

    def ema(self) -> dict[str, EMASpec]:
        return {"net": self.cfg.ema}

    def dataset(self) -> torch.utils.data.Dataset:
        if self.cfg.data.captions:
            d = self.cfg.data
            if not d.path:
                raise ConfigError("data.path: give captioned images (a folder with .txt captions, a JSONL file or a "
                                  "prepared dataset)")
            ds = CaptionItems(d.path, d.resolution, d.xflip)
            self.texts = ds.texts
            return ds
        ds = LatentItems(self.cfg) if self.cfg.data.latents else ImageItems(self.cfg.data)
        m = self.cfg.model
        if self.cfg.data.class_from_folder and m.label_dim != ds.num_classes:
            raise ConfigError(f"model.label_dim is {m.label_dim} but {self.cfg.data.path} has {ds.num_classes} "
                              "class folders; set model.label_dim to match")
        return ds

    def loss(self, batch, step: int):
        x = self.codec.encode_latents(batch["raw"]) if "raw" in batch else batch["x"]  # [B, C, R, R]
        labels = batch["label"] if self.cfg.data.class_from_folder and self.cfg.model.label_dim else None
        tokens = self.tokens(batch["caption"].tolist()) if "caption" in batch else None
        loss = edm_loss(self.net, x, labels, self.cfg.loss, tokens=tokens).mean()
        return loss, {"loss": loss.detach()}

    def tokens(self, captions: list[int]) -> torch.Tensor:
        """Caption indices -> the text encoder's per-token features [B, T, token_dim]."""
        return prompt_tokens(self.text, [self.texts[i] for i in captions]).to(self.device)

    def state_dict(self) -> dict:
        # captions for the samples of `vidgen eval --fake` (generate.py); up to 256, spread over the data
        step = max(len(self.texts) // 256, 1)
        return {"prompts": self.texts[::step][:256]} if self.texts else {}

    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor:
        net = nets["net"]
        m = self.cfg.model
        gen = torch.Generator(device=self.device).manual_seed(seed)
        noise = torch.randn(num, m.img_channels, m.img_resolution, m.img_resolution, generator=gen, device=self.device)
        labels = torch.arange(num, device=self.device) % m.label_dim if m.label_dim else None
        tokens = self.tokens([i % len(self.texts) for i in range(num)]) if self.text is not None and self.texts else None
        scfg = SamplerConfig(steps=min(self.cfg.sample.steps, 16), dtype=self.cfg.sample.dtype)
        with torch.no_grad():
            x = sample(GuidedDenoiser(net, labels=labels, tokens=tokens), noise, scfg).float()
        if self.cfg.encoder.kind == "vae":  # decoded with the dataset's VAE
            return self.codec.decode(x).float() / 127.5 - 1
        return x.clamp(-1, 1)

    def run_name(self) -> str:
        name = Path(self.cfg.data.path.rstrip("/")).name or "data"
        r = self.cfg.data.resolution
        return f"diffusion-{self.cfg.model.preset or 'custom'}-{name}-{r}x{r}-b{self.cfg.engine.batch}"



