"""Pixels <-> latents: EDM2's encoders (Karras et al. 2024, section 5 and appendix) on top of
diffusers' ``AutoencoderKL`` (the optional extra ``vidgen[latent]``).

Two representations of an image, as in EDM2:

- ``rgb``: the model space is the image itself, ``x = pixels / 127.5 - 1`` and back
  ``pixels = clip(x * 127.5 + 128, 0, 255)``.
- ``vae``: an image is encoded once (``vidgen data prepare --latents VAE``) into *raw
  latents*, the mean and standard deviation of the VAE posterior for pixels / 255 in [0, 1];
  every time a training example is drawn, a fresh sample ``mean + std * eps`` is mapped to
  the model space with a per-channel affine map ``z = sample * scale + bias``, where

      scale = final_std / raw_std,   bias = final_mean - raw_mean * scale

  so that latents with the assumed raw statistics (``raw_mean``, ``raw_std``, per channel)
  come out with mean ``final_mean`` (0) and standard deviation ``final_std`` (0.5, the EDM
  sigma_data). Decoding inverts the map, ``(z - bias) / scale``, runs the VAE decoder and
  clamps to [0, 1] before scaling to 0..255. Scale and bias are computed in float32, like the
  published img512 models store them. EDM2 assumes raw_mean (5.81, 3.25, 0.12, -2.15) and
  raw_std (4.17, 4.62, 3.71, 3.28) for Stability's ``sd-vae-ft-mse`` on ImageNet; for any other
  data the prepared dataset's measured statistics are used unless the config sets them.

VAE weights are never downloaded. ``encoder.vae`` names a folder in diffusers' layout
(``config.json`` + ``diffusion_pytorch_model.safetensors``), the weights file in such a
folder, or a model name looked up as ``$VIDGEN_CACHE/vae/<name with / as -->/`` (default
``~/.cache/vidgen``). ``encoder.vae_sha256`` pins the weights file: a file with another
SHA-256 is refused. ``vidgen data prepare --latents`` records the digest of the file it
encoded with, and training and sampling check it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vidgen.errors import ConfigError, VidgenError
from vidgen.fileio import sha256_file

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# EDM2's assumed statistics of sd-vae-ft-mse raw latents on ImageNet (train_edm2.py / encoders).
SD_VAE_RAW_MEAN = (5.81, 3.25, 0.12, -2.15)
SD_VAE_RAW_STD = (4.17, 4.62, 3.71, 3.28)


@dataclass
class EncoderConfig:
    """The ``encoder`` section of a diffusion config: what the model's space is."""

    kind: Literal["rgb", "vae"] = "rgb"
    vae: str = ""  # folder / weights file / name under $VIDGEN_CACHE/vae/
    vae_sha256: str = ""  # SHA-256 of the weights file; checked on every load when set
    raw_mean: tuple[float, ...] | None = None  # None: the prepared dataset's measured statistics
    raw_std: tuple[float, ...] | None = None
    final_mean: float = 0.0
    final_std: float = 0.5
    scale: tuple[float, ...] | None = None  # explicit map (imported models); default from raw_* and final_*
    bias: tuple[float, ...] | None = None
    batch: int = 8  # images per VAE call


def cache_dir() -> Path:
    return Path(os.environ.get("VIDGEN_CACHE", "~/.cache/vidgen")).expanduser()


def scale_bias(cfg: EncoderConfig) -> tuple[np.ndarray, np.ndarray]:
    """(scale, bias) per channel, float32: explicit, or from the raw and final statistics."""
    if cfg.scale is not None and cfg.bias is not None:
        return np.float32(cfg.scale), np.float32(cfg.bias)
    if cfg.raw_mean is None or cfg.raw_std is None:
        raise ConfigError("encoder.raw_mean / encoder.raw_std: not set and no prepared latent dataset to take "
                          "them from; set them (or encoder.scale and encoder.bias)")
    if len(cfg.raw_mean) != len(cfg.raw_std):
        raise ConfigError(f"encoder.raw_mean has {len(cfg.raw_mean)} values, encoder.raw_std {len(cfg.raw_std)}")
    scale = np.float32(cfg.final_std) / np.float32(cfg.raw_std)
    bias = np.float32(cfg.final_mean) - np.float32(cfg.raw_mean) * scale
    return scale, bias


def resolve_vae(spec: str, sha256: str = "") -> tuple[Path, Path]:
    """(config.json, weights file) of the VAE ``spec``; the weights' SHA-256 must equal
    ``sha256`` when given. VidgenError naming what is missing and where to put it."""
    if not spec:
        raise ConfigError("encoder.vae: name the VAE (a folder with config.json and "
                          f"{WEIGHTS_NAME}, or a name under $VIDGEN_CACHE/vae/)")
    path = Path(spec).expanduser()
    if path.suffix == ".bin" or path.suffix in (".pt", ".pth", ".ckpt"):
        raise VidgenError(f"VAE {spec}: vidgen reads safetensors only (a pickle can run code when loaded); "
                          f"use the {WEIGHTS_NAME} of the model")
    if path.is_file():
        folder, weights = path.parent, path
    elif path.is_dir():
        folder, weights = path, path / WEIGHTS_NAME
    elif path.is_absolute() or spec.startswith((".", "~")):
        raise VidgenError(f"VAE {spec} does not exist; pass the folder that holds its config.json and "
                          f"{WEIGHTS_NAME} (sample: --vae DIR; prepare: --latents DIR)")
    else:  # a model name, e.g. stabilityai/sd-vae-ft-mse
        folder = cache_dir() / "vae" / spec.replace("/", "--")
        weights = folder / WEIGHTS_NAME
    config = folder / "config.json"
    if not weights.is_file() or not config.is_file():
        pin = f" (SHA-256 {sha256})" if sha256 else ""
        raise VidgenError(f"VAE {spec!r} not found: expected {config} and {weights}{pin}. vidgen never downloads "
                          f"weights: put the model's config.json and {WEIGHTS_NAME} in {folder} (e.g. from the "
                          f"Hugging Face repository {spec!r}), or pass a folder that holds them")
    if sha256:
        digest = file_digest(weights)
        if digest != sha256:
            raise VidgenError(f"VAE weights {weights} have SHA-256 {digest}, expected {sha256} (the file the model "
                              "was trained / the dataset was encoded with); use that file")
    return config, weights


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, per process


def file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def load_vae(spec: str, sha256: str = "", device="cpu"):
    """diffusers ``AutoencoderKL`` built from the folder's config.json and loaded from its
    safetensors (nothing fetched), in eval mode. -> (vae, SHA-256 of the weights)"""
    from safetensors.torch import load_file

    from vidgen.optional import require
    diffusers = require("diffusers", "latent", "the latent space (encoder kind 'vae')")
    config, weights = resolve_vae(spec, sha256)
    cfg = json.loads(config.read_text())
    if cfg.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise VidgenError(f"{config} describes a {cfg['_class_name']}, not an AutoencoderKL")
    vae = diffusers.AutoencoderKL.from_config(cfg)
    try:
        vae.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise VidgenError(f"{weights} does not match {config}: {str(exc).splitlines()[0]}") from None
    return vae.eval().requires_grad_(False).to(device), file_digest(weights)


class LatentCodec:
    """Images <-> the model space of ``cfg`` (module docstring). The VAE loads on first use."""

    def __init__(self, cfg: EncoderConfig, device="cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self._vae, self.vae_sha256 = None, cfg.vae_sha256

    @property
    def vae(self):
        if self._vae is None:
            self._vae, self.vae_sha256 = load_vae(self.cfg.vae, self.cfg.vae_sha256, self.device)
        return self._vae

    def encode_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> raw latents [B, 2C, h, w] (posterior mean and std), float32."""
        assert self.cfg.kind == "vae"
        x = images.to(self.device, torch.float32) / 255
        out = []
        with torch.no_grad():
            for chunk in x.split(self.cfg.batch):
                dist = self.vae.encode(chunk)["latent_dist"]
                out.append(torch.cat([dist.mean, dist.std], dim=1))
        return torch.cat(out)

    def encode_latents(self, raw: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw latents [B, 2C, h, w] -> model space [B, C, h, w]: a posterior sample, scaled."""
        mean, std = raw.to(torch.float32).chunk(2, dim=1)
        x = mean + torch.randn(mean.shape, generator=generator, device=mean.device) * std
        scale, bias = (torch.as_tensor(v, device=x.device).reshape(1, -1, 1, 1) for v in scale_bias(self.cfg))
        return x * scale + bias

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 [B, 3, H, W] -> model space."""
        if self.cfg.kind == "rgb":
            return images.to(self.device, torch.float32) / 127.5 - 1
        return self.encode_latents(self.encode_pixels(images), generator)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space [B, C, h, w] -> uint8 [B, 3, H, W]."""
        x = x.to(self.device, torch.float32)
        if self.cfg.kind == "rgb":
            return (x * 127.5 + 128).clip(0, 255).to(torch.uint8)
        scale, bias = (torch.as_tensor(v, device=x.device).reshape(1, -1, 1, 1) for v in scale_bias(self.cfg))
        x = (x - bias) / scale
        with torch.no_grad():
            out = torch.cat([self.vae.decode(chunk)["sample"] for chunk in x.split(self.cfg.batch)])
        return out.clamp(0, 1).mul(255).to(torch.uint8)

    def factor(self) -> int:
        """Pixels per latent along each side (1 for rgb)."""
        if self.cfg.kind == "rgb":
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)
