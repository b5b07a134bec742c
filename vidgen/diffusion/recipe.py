"""EDM2 training on the shared engine (METHODS.md sections 3-4), and loading trained
denoisers back from checkpoints, power-EMA snapshots and post-hoc reconstructions.

Data: a folder of images, a folder of frame folders / videos, or a prepared dataset, read
through ``vidgen.data.datasets.ClipDataset`` one frame at a time; with
``data.class_from_folder`` the class of an image is the index of its sub-folder (clip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vidgen.config import NonNegativeInt, PositiveFloat, PositiveInt
from vidgen.diffusion.edm import Denoiser, LossConfig, edm_loss
from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, sample
from vidgen.diffusion.unet import UNetConfig, build_denoiser
from vidgen.errors import ConfigError, VidgenError
from vidgen.fileio import read_safetensors, read_safetensors_metadata
from vidgen.train.recipe import AugmentSpec, EMASpec, EngineConfig, OptimizerSpec, Phase, Recipe
from vidgen.train.sidecar import load_network_state, refuse_nonfinite


@dataclass
class DiffusionDataConfig:
    path: str = ""
    resolution: PositiveInt = 32  # square side; images are centre-cropped and resized
    class_from_folder: bool = False  # label = sub-folder (clip) index; needs model.label_dim = #folders
    xflip: bool = False


@dataclass
class OptimConfig:
    lr: PositiveFloat = 0.0100  # alpha_ref (EDM2: 0.0120 XS ... 0.0065 XXL)
    ref_steps: PositiveInt = 70000  # t_ref of lr = alpha_ref / sqrt(max(t / t_ref, 1))
    rampup_steps: NonNegativeInt = 0
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class DiffusionConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(steps=2000, batch=32))
    data: DiffusionDataConfig = field(default_factory=DiffusionDataConfig)
    model: UNetConfig = field(default_factory=lambda: UNetConfig(preset="tiny", img_resolution=32,
                                                                 img_channels=3, label_dim=0))
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMASpec = field(default_factory=lambda: EMASpec(kind="power", sigma_rels=(0.05, 0.10), snapshot_every=0))
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # kind "none" only (data.xflip flips real images)
    sample: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=32))
    init: str = ""  # checkpoint / reconstruction to start from (fine-tuning a noise-range expert)


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


class DiffusionRecipe(Recipe):
    family = "diffusion"
    config_class = DiffusionConfig

    def __init__(self, cfg: DiffusionConfig, device: torch.device):
        super().__init__(cfg, device)
        cfg.augment.check(("none",))
        if cfg.model.img_resolution != cfg.data.resolution:
            raise ConfigError(f"model.img_resolution ({cfg.model.img_resolution}) must equal data.resolution "
                              f"({cfg.data.resolution})")
        self.net = build_denoiser(cfg.model, sigma_data=cfg.loss.sigma_data).to(device)
        if cfg.init:
            state, _ = load_weights(cfg.init)
            load_network_state(self.net, state, f"init={cfg.init}")

    def networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def optimizers(self) -> dict[str, OptimizerSpec]:
        o = self.cfg.optim
        return {"net": OptimizerSpec(("net",), o.lr, betas=tuple(o.betas), schedule="inv_sqrt",
                                     ref_steps=o.ref_steps, rampup_steps=o.rampup_steps)}

    def phases(self) -> list[Phase]:
        return [Phase("denoise", "net", self.loss, ("net",))]

    def ema(self) -> dict[str, EMASpec]:
        return {"net": self.cfg.ema}

    def dataset(self) -> torch.utils.data.Dataset:
        ds = ImageItems(self.cfg.data)
        m = self.cfg.model
        if self.cfg.data.class_from_folder and m.label_dim != ds.num_classes:
            raise ConfigError(f"model.label_dim is {m.label_dim} but {self.cfg.data.path} has {ds.num_classes} "
                              "class folders; set model.label_dim to match")
        return ds

    def loss(self, batch, step: int):
        x = batch["x"]  # [B, 3, R, R]
        labels = batch["label"] if self.cfg.data.class_from_folder and self.cfg.model.label_dim else None
        loss = edm_loss(self.net, x, labels, self.cfg.loss).mean()
        return loss, {"loss": loss.detach()}

    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor:
        net = nets["net"]
        m = self.cfg.model
        gen = torch.Generator(device=self.device).manual_seed(seed)
        noise = torch.randn(num, m.img_channels, m.img_resolution, m.img_resolution, generator=gen, device=self.device)
        labels = torch.arange(num, device=self.device) % m.label_dim if m.label_dim else None
        scfg = SamplerConfig(steps=min(self.cfg.sample.steps, 16))
        return sample(GuidedDenoiser(net, labels=labels), noise, scfg).clamp(-1, 1)

    def run_name(self) -> str:
        name = Path(self.cfg.data.path.rstrip("/")).name or "data"
        r = self.cfg.data.resolution
        return f"diffusion-{self.cfg.model.preset or 'custom'}-{name}-{r}x{r}-b{self.cfg.engine.batch}"


# --- loading trained denoisers ---------------------------------------------------------------
def load_weights(path: str | Path, network: str = "net_ema") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config dict) from a run / checkpoint folder (``network``), a post-hoc EMA
    reconstruction (config embedded) or a power-EMA snapshot in ``RUN/phema/`` (config from
    ``RUN/config.yaml``)."""
    path = Path(path)
    if not path.exists():
        raise VidgenError(f"{path} does not exist; pass a run folder, a checkpoint folder or a .safetensors "
                          "written by `vidgen diffusion phema`")
    if path.suffix == ".safetensors" and path.is_file():
        meta = read_safetensors_metadata(path)
        if "config" in meta:
            config = json.loads(meta["config"])
        else:
            run_cfg = path.parent.parent / "config.yaml"
            if "vidgen" not in meta or not run_cfg.is_file():
                raise VidgenError(f"{path} carries no config and has no run config.yaml two folders up; "
                                  "use a checkpoint folder or a file from `vidgen diffusion phema`")
            from vidgen.config import load_yaml
            config = load_yaml(run_cfg)
        state = read_safetensors(path)
        refuse_nonfinite(state, str(path))
        return state, config
    from vidgen.train.checkpoint import read_checkpoint, resolve_checkpoint
    c = read_checkpoint(resolve_checkpoint(path))
    if c.family != "diffusion":
        raise VidgenError(f"{c.path} is a {c.family!r} checkpoint, not a diffusion one")
    name = network if network in c.network_names else "net"
    return c.network_state(name), c.config


def load_denoiser(path: str | Path, device="cpu", network: str = "net_ema") -> tuple[Denoiser, DiffusionConfig]:
    """A trained denoiser in eval mode (EMA copies must not renormalise their weights)."""
    from vidgen.config import config_from_dict
    state, config = load_weights(path, network)
    cfg = config_from_dict(DiffusionConfig, config)
    net = build_denoiser(cfg.model, sigma_data=cfg.loss.sigma_data)
    load_network_state(net, state, str(path))
    return net.to(device).eval().requires_grad_(False), cfg
