"""Trained denoisers back from run folders, checkpoints, power-EMA snapshots and post-hoc
reconstructions (imported runs are ordinary run folders).

A network is rebuilt from the run's config and keeps the dtype its weights were stored in: an
imported EDM2 model stays float16 and computes like the reference (precond.py, unet.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vidgen.diffusion.precond import Denoiser
from vidgen.diffusion.config import DiffusionConfig
from vidgen.diffusion.unet import build_denoiser
from vidgen.errors import VidgenError


def load_weights(path: str | Path, network: str = "net_ema") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config dict) from a run / checkpoint folder (``network``), a post-hoc EMA
    reconstruction (config embedded) or a power-EMA snapshot in ``RUN/phema/`` (config from
    ``RUN/config.yaml``)."""
    path = Path(path)
    if not path.exists():
        raise VidgenError(f"{path} does not exist; pass a run folder, a checkpoint folder or a .safetensors "
                          "written by `vidgen diffusion phema`")
    if path.suffix == ".safetensors" and path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "config" in meta:
            config = json.loads(meta["config"])
        else:
            run_cfg = path.parent.parent / "config.yaml"
            if "vidgen" not in meta or not run_cfg.is_file():
                raise VidgenError(f"{path} carries no config and has no run config.yaml two folders up; "
                                  "use a checkpoint folder or a file from `vidgen diffusion phema`")
            from vidgen.config import load_yaml
            config = load_yaml(run_cfg)
        return load_file(str(path)), config
    from vidgen.train.checkpoint import read_checkpoint, resolve_checkpoint
    c = read_checkpoint(resolve_checkpoint(path))
    if c.family != "diffusion":
        raise VidgenError(f"{c.path} is a {c.family!r} checkpoint, not a diffusion one")
    name = network if network in c.network_names else "net"
    return c.network_state(name), c.config


def stored_dtype(state: dict[str, torch.Tensor]) -> torch.dtype:
    """The one floating dtype of a state dict (float32 when mixed)."""
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def _build(config: dict, dtype: torch.dtype = torch.float32) -> tuple[Denoiser, DiffusionConfig]:
    from vidgen.config import config_from_dict
    cfg = config_from_dict(DiffusionConfig, config)
    return build_denoiser(cfg.model, sigma_data=cfg.loss.sigma_data, precond=cfg.precond).to(dtype), cfg


def load_denoiser(path, device="cpu", network: str = "net_ema") -> tuple[Denoiser, DiffusionConfig]:
    """A trained denoiser in eval mode (EMA copies must not renormalise their weights), in the
    dtype of its stored weights. ``path``: a run or checkpoint folder, a .safetensors from
    `vidgen diffusion phema`, or an already verified checkpoint (vidgen.train.checkpoint), whose
    config may carry overrides (`vidgen eval --fake-set`)."""
    from vidgen.train.checkpoint import Checkpoint, load_network, read_checkpoint

    if not isinstance(path, Checkpoint):
        path = Path(path)
    if isinstance(path, Path) and path.suffix == ".safetensors" and path.is_file():  # a phema file
        state, config = load_weights(path, network)
        net, cfg = _build(config, stored_dtype(state))
        net.load_state_dict(state)
    else:
        c = path if isinstance(path, Checkpoint) else read_checkpoint(path)
        if c.family != "diffusion":
            raise VidgenError(f"{c.path} is a {c.family!r} checkpoint, not a diffusion one")
        names = (network, "net_ema", "net")
        name = next((n for n in names if n in c.network_names), "net")
        with safe_open(str(c.path / "networks.safetensors"), framework="pt") as f:
            key = next((k for k in f.keys() if k.startswith(name + "/")), None)
            dtype = f.get_slice(key).get_dtype() if key else "F32"
        dtype = {"F16": torch.float16, "BF16": torch.bfloat16}.get(dtype, torch.float32)
        built = {}

        def build(config):
            built["net"], built["cfg"] = _build(config, dtype)
            return built["net"]
        net = load_network(c, names, build)
        cfg = built["cfg"]
    return net.to(device).eval().requires_grad_(False), cfg
