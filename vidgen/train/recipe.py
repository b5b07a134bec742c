"""The contract between the training engine and a model family.

A model family (long-video GAN, time-lapse GAN, diffusion) plugs into the one engine in
`vidgen/train/engine.py` by supplying a :class:`Recipe`: its networks, optimiser settings,
the phases of one training step, the EMA copies it wants, its dataset and any extra state
(for example the adaptive-augmentation probability). The engine owns everything else: the
loop, gradient accumulation, DDP gradient averaging, mixed precision, non-finite guards,
learning-rate schedules, lazy-regularisation compensation, EMA, checkpoints, resume,
logging and sample media.

One training step, as the engine runs it::

    batch = next(loader)                         # this rank's share of the global batch
    for phase in recipe.phases():                # e.g. G, D, Dreg (every 16 steps)
        if step % phase.interval: continue
        toggle requires_grad so only phase.trainable networks get gradients
        for micro in split(batch, accum):
            loss, stats = phase.loss(micro, step)
            (loss * phase.interval / accum).backward()   # lazy regularisers are scaled here
        average gradients over ranks, zero non-finite ones, optimiser step
        update the EMA copies of the networks this phase trained
    recipe.end_step(step, stats)

Randomness inside ``phase.loss`` uses the global torch RNG (and numpy's); the engine seeds it
per rank and checkpoints it, which is what makes resume bitwise exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
from torch import nn

from vidgen.config import NonNegativeInt, PositiveInt
from vidgen.errors import ConfigError
from vidgen.train.precision import MixedKind

LossFn = Callable[[Any, int], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class OptimizerSpec:
    """Adam settings for the parameters of some networks.

    With ``reg_interval = k > 1`` (lazy regularisation shares this optimiser every k steps),
    the engine applies the StyleGAN2 compensation: ``c = k / (k + 1)``, ``lr *= c``,
    ``betas = (beta1 ** c, beta2 ** c)``.
    """

    networks: tuple[str, ...]  # names in Recipe.networks() whose parameters this updates
    lr: float
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.0
    reg_interval: int = 1
    schedule: str = "constant"  # "constant" | "inv_sqrt" (EDM2: lr / sqrt(max(step / ref_steps, 1)))
    rampup_steps: int = 0  # linear ramp-up from 0 over this many steps
    ref_steps: int = 0  # the t_ref of "inv_sqrt"


@dataclass
class Phase:
    """One part of a training step: a loss and the optimiser that follows it."""

    name: str  # "G", "D", "Greg", "Dreg", "denoise", ...
    optimizer: str  # key of Recipe.optimizers()
    loss: LossFn  # (micro_batch, step) -> (scalar loss, {stat name: float})
    trainable: tuple[str, ...]  # networks that receive gradients in this phase
    interval: int = 1  # run every `interval` steps; the engine multiplies the loss by it


@dataclass
class EMASpec:
    """The ``ema:`` section of every family's config: the exponential moving average the
    engine keeps of the generator (or denoiser).

    kind "beta": fixed per-step decay ``beta`` after a linear warm-up of ``warmup_steps``
    (the long-video GAN: 0.99985, 25k steps). kind "halflife": StyleGAN-style half-life in
    thousands of images, with ``rampup`` (fraction of images seen). kind "power": EDM2
    power-function EMA for each of ``sigma_rels``, with snapshots every ``snapshot_every``
    steps for post-hoc reconstruction (docs/METHODS.md 4.3).
    """

    kind: Literal["beta", "halflife", "power"] = "halflife"
    beta: float = 0.999
    warmup_steps: int = 0
    halflife_kimg: float = 10.0
    rampup: float | None = 0.05
    sigma_rels: tuple[float, ...] = (0.05, 0.10)
    snapshot_every: int = 0


@dataclass
class AugmentSpec:
    """The ``augment:`` section of every family's config: what the discriminator's inputs go
    through (the same keys in every family; each family documents which kinds it supports).

    kind "none": nothing. kind "ada": adaptive discriminator augmentation (Karras et al. 2020):
    the ops of ``pipeline`` each applied with probability p, p starting at ``p`` and adjusted
    every ``interval`` steps towards E[sign(D(real))] = ``target`` at a speed of 1 per
    ``speed_kimg`` thousand real samples, capped at ``p_max``. kind "diffaug": clip-consistent
    DiffAugment (Zhao et al. 2020) with fixed strengths: ``xflip`` probability, ``color``,
    ``translation`` and ``cutout`` fractions, ``time_stretch`` (2^U(-a, a), video only), each
    op applied with probability ``p``.
    """

    kind: Literal["none", "ada", "diffaug"] = "none"
    p: float = 0.0
    pipeline: Literal["b", "bg", "bgc"] = "bgc"  # ADA ops: blits, + geometry, + colour
    target: float = 0.6
    p_max: float = 1.0
    speed_kimg: float = 500.0
    interval: int = 4
    xflip: float = 0.5
    color: bool = True
    translation: float = 0.125
    cutout: float = 0.5
    time_stretch: float = 0.0

    def check(self, kinds: tuple[str, ...], where: str = "augment") -> None:
        """ConfigError unless the kind is one of ``kinds`` and the probabilities are in [0, 1]."""
        from vidgen.errors import ConfigError

        if self.kind not in kinds:
            raise ConfigError(f"{where}.kind: {self.kind!r} is not supported by this family; "
                              f"choose one of {', '.join(map(repr, kinds))}")
        for key in ("p", "p_max", "xflip"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{where}.{key} must be in [0, 1]; got {getattr(self, key)}")


class Recipe:
    """Base class of a model family's training recipe.

    Subclasses set ``family`` (the name used by ``vidgen train FAMILY``) and
    ``config_class`` (a dataclass whose ``engine`` field is a
    :class:`EngineConfig` and whose ``data`` field has at least ``path``).
    """

    family: str = ""
    config_class: type = object
    # what engine.precision=mixed (and auto on CUDA) does: the reference's recipe (precision.py)
    mixed_precision: ClassVar[MixedKind] = "fp32"

    def __init__(self, cfg: Any, device: torch.device):
        self.cfg = cfg
        self.device = device

    # --- what the engine trains -------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, OptimizerSpec]:
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def ema(self) -> dict[str, EMASpec]:
        """Network name -> EMA settings. The engine stores the copy as ``f"{name}_ema"``."""
        return {}

    def statistics(self) -> dict[str, nn.Module]:
        """Modules besides :meth:`networks` whose running statistics (vidgen/nn/stats.py) the
        phases update, e.g. a path-length regulariser: the engine keeps them identical on every
        rank like the networks' own (vidgen/train/sync.py). Their state is the recipe's to save."""
        return {}

    def dataset(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def fp16_layers(self, num_fp16_res: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
        """For ``mixed_precision = "fp16-layers"``: the layers of the ``num_fp16_res`` highest
        resolutions, each with the positions of its activation arguments
        (vidgen/nn/fp16.py:run_in_fp16)."""
        return []

    # --- optional hooks ---------------------------------------------------------------
    def end_step(self, step: int, stats: dict[str, float]) -> None:
        """Called after every step with the step's stats (e.g. to adapt augmentation)."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint: JSON-able values and tensors (e.g. ADA probability)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def sample(self, nets: dict[str, nn.Module], num: int, seed: int) -> torch.Tensor | None:
        """Media for the log: float in [-1, 1], ``[N, C, H, W]`` images or ``[N, C, T, H, W]``
        clips, made with the given networks (the engine passes the EMA copies)."""
        return None

    def run_name(self) -> str:
        """What runs, for the run folder name, e.g. ``lvg-lowres-drive-36x64-b8``."""
        return self.family


@dataclass
class EngineConfig:
    """Settings of the training loop itself, shared by every family (the ``engine`` section
    of a family's config)."""

    steps: PositiveInt = 1000  # optimiser steps in the run
    batch: PositiveInt = 8  # global batch: all ranks and all accumulation rounds together
    accum: PositiveInt = 1  # gradient-accumulation rounds per step
    seed: NonNegativeInt = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # fp32, bf16 (autocast), fp16 (autocast + loss scaling), mixed (the family's reference:
    # Recipe.mixed_precision, precision.py), auto (mixed on CUDA, fp32 elsewhere)
    precision: Literal["auto", "fp32", "bf16", "fp16", "mixed"] = "auto"
    num_fp16_res: NonNegativeInt = 4  # mixed, StyleGAN-style families: float16 in this many top resolutions
    workers: NonNegativeInt = 2  # DataLoader worker processes per rank
    out_dir: str = "runs"  # run folders are created under this
    checkpoint_every: PositiveInt = 500  # steps between checkpoints
    keep_last: PositiveInt = 3  # checkpoints kept, besides milestones
    milestone_every: NonNegativeInt = 0  # steps between checkpoints that are never deleted (0: none)
    log_every: PositiveInt = 50  # steps per tick: one JSONL stats line
    sample_every: NonNegativeInt = 0  # steps between sample media (0: off)
    max_nonfinite: PositiveInt = 10  # consecutive non-finite losses before training stops
    consistency_every: NonNegativeInt = 100  # steps between checks that all ranks hold the same weights (0: off)
    compile: bool = False  # torch.compile the trained networks (in place; docs/TRAINING.md, engine.compile)

    def check(self) -> None:
        if self.batch % self.accum:
            raise ConfigError(f"engine.batch={self.batch} must be divisible by engine.accum={self.accum} "
                              "(each accumulation round takes an equal share)")
