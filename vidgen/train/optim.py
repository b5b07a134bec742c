"""Optimisers of the engine: Adam built from an ``OptimizerSpec``, with the StyleGAN2
lazy-regularisation compensation, and the learning-rate schedules (docs/METHODS.md 4)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from vidgen.errors import ConfigError
from vidgen.train.recipe import OptimizerSpec, Phase


def build_optimizer(spec: OptimizerSpec, nets: dict[str, nn.Module], name: str) -> torch.optim.Adam:
    """Adam over the networks of ``spec``, with the lazy-regularisation compensation
    (StyleGAN2): c = k / (k + 1), lr *= c, betas **= c."""
    params = []
    for net in spec.networks:
        if net not in nets:
            raise ConfigError(f"optimizer {name!r} names network {net!r}; the recipe has {', '.join(nets)}")
        params += [p for p in nets[net].parameters() if p.requires_grad]
    if spec.schedule not in ("constant", "inv_sqrt"):
        raise ConfigError(f"optimizer {name!r}: unknown learning-rate schedule {spec.schedule!r}; use constant or inv_sqrt")
    if spec.schedule == "inv_sqrt" and spec.ref_steps < 1:
        raise ConfigError(f"optimizer {name!r}: the inv_sqrt schedule needs ref_steps >= 1 (EDM2's t_ref, "
                          f"e.g. 70000); got {spec.ref_steps}")
    if not (math.isfinite(spec.lr) and spec.lr > 0):
        raise ConfigError(f"optimizer {name!r}: the learning rate must be a positive number; got {spec.lr!r}")
    if not all(math.isfinite(b) and 0 <= b < 1 for b in spec.betas):
        raise ConfigError(f"optimizer {name!r}: Adam betas must lie in [0, 1); got {tuple(spec.betas)}")
    if spec.reg_interval < 1 or spec.rampup_steps < 0:
        raise ConfigError(f"optimizer {name!r}: reg_interval must be >= 1 and rampup_steps >= 0; got "
                          f"{spec.reg_interval} and {spec.rampup_steps}")
    c = spec.reg_interval / (spec.reg_interval + 1) if spec.reg_interval > 1 else 1.0
    opt = torch.optim.Adam(params, lr=spec.lr * c, betas=(spec.betas[0] ** c, spec.betas[1] ** c),
                           eps=spec.eps, weight_decay=spec.weight_decay)
    opt.base_lr = spec.lr * c  # the schedule scales this
    return opt


def scheduled_lr(spec: OptimizerSpec, base_lr: float, step: int) -> float:
    """Learning rate of the update made in step ``step`` (0-based): a linear ramp-up that
    reaches ``base_lr`` at step ``rampup_steps - 1``, and for ``inv_sqrt`` EDM2's decay
    ``/ sqrt(max(step / ref_steps, 1))`` (docs/METHODS.md 4)."""
    lr = base_lr
    if spec.rampup_steps > 0:
        lr *= min((step + 1) / spec.rampup_steps, 1.0)
    if spec.schedule == "inv_sqrt":
        lr /= math.sqrt(max(step / max(spec.ref_steps, 1), 1.0))
    elif spec.schedule != "constant":
        raise ConfigError(f"unknown learning-rate schedule {spec.schedule!r}; use constant or inv_sqrt")
    return lr


def check_lazy_regularisation(specs: dict[str, OptimizerSpec], phases: list[Phase]) -> None:
    """Warn when the lazy-regularisation compensation of an optimiser does not match its
    phases: StyleGAN2 compensates (``reg_interval = k``) exactly when the optimiser serves a
    main phase every step and a regulariser every k steps."""
    for name, spec in specs.items():
        intervals = sorted({ph.interval for ph in phases if ph.optimizer == name})
        lazy = [k for k in intervals if k > 1]
        if spec.reg_interval > 1 and intervals != [1, spec.reg_interval]:
            warnings.warn(f"optimizer {name!r} is compensated for a regulariser every {spec.reg_interval} "
                          f"steps, but its phases run every {intervals} steps; set reg_interval=1 "
                          "(no lazy regulariser) or give the regulariser phase that interval", stacklevel=3)
        elif spec.reg_interval == 1 and 1 in intervals and lazy:
            warnings.warn(f"optimizer {name!r} serves a phase every {lazy[0]} steps besides its main phase "
                          f"but has reg_interval=1; set reg_interval={lazy[0]} for the StyleGAN2 "
                          "lr / beta compensation", stacklevel=3)
