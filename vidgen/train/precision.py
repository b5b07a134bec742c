"""What ``engine.precision`` means for a run (docs/TRAINING.md "Precision").

    fp32   everything in float32
    bf16   bfloat16 autocast around every phase's forward pass (CPU and CUDA)
    fp16   float16 autocast with dynamic loss scaling (:class:`LossScaler`)
    mixed  the family's reference recipe (``Recipe.mixed_precision``):
             "fp16-layers": the StyleGAN2/3 scheme, float16 activations in the layers of the
                 ``engine.num_fp16_res`` highest resolutions with their outputs clamped to
                 +-conv_clamp (``Recipe.fp16_layers``, vidgen/nn/fp16.py), no loss scaling
             "bf16": bfloat16 autocast (EDM2), float16 autocast with loss scaling on a GPU
                 without bfloat16
             "fp32": the reference trains in float32 (the long-video GAN's low-res stage)
    auto   mixed on CUDA, fp32 elsewhere

Weights, optimiser state, EMA copies and checkpoints are float32 in every mode; EMA copies,
samples and evaluation compute in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vidgen.errors import ConfigError

MixedKind = Literal["fp32", "bf16", "fp16-layers"]


@dataclass(frozen=True)
class PrecisionPlan:
    name: str  # what the run does, for the log: fp32, bf16, fp16, fp16-layers
    autocast: torch.dtype | None = None  # autocast dtype around the phases' forward passes
    loss_scaling: bool = False
    fp16_layers: bool = False


def _bf16_ok(device: torch.device) -> bool:
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


def plan_precision(precision: str, device: torch.device, mixed: MixedKind) -> PrecisionPlan:
    """The plan for ``engine.precision`` on ``device`` for a family whose reference recipe is
    ``mixed``."""
    if precision == "auto":
        precision = "mixed" if device.type == "cuda" else "fp32"
    if precision == "mixed":
        if mixed == "fp16-layers":
            return PrecisionPlan("fp16-layers", fp16_layers=True)
        if mixed == "bf16":
            precision = "bf16" if _bf16_ok(device) else "fp16"
        else:
            precision = "fp32"
    if precision == "fp32":
        return PrecisionPlan("fp32")
    if precision == "bf16":
        if not _bf16_ok(device):
            raise ConfigError(f"engine.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; "
                              "use engine.precision=fp16 (float16 with loss scaling) or mixed")
        return PrecisionPlan("bf16", autocast=torch.bfloat16)
    if precision == "fp16":
        return PrecisionPlan("fp16", autocast=torch.float16, loss_scaling=True)
    raise ConfigError(f"engine.precision must be auto, fp32, bf16, fp16 or mixed; got {precision!r}")


class LossScaler:
    """Dynamic loss scaling for float16 (Micikevicius et al. 2018, "Mixed precision
    training"): the loss is multiplied by ``scale`` before backward; a step whose gradients
    hold inf / nan is skipped and halves the scale, and ``growth_interval`` good steps in a row
    double it. The decision uses the gradients averaged over ranks, so every rank keeps the
    same scale; the state is checkpointed so resume is exact."""

    def __init__(self, scale: float = 2.0 ** 16, growth_interval: int = 2000, min_scale: float = 1.0):
        self.scale, self.growth_interval, self.min_scale = float(scale), growth_interval, min_scale
        self.good_steps = 0
        self.skipped = 0

    def update(self, finite: bool) -> None:
        if finite:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.scale *= 2.0
        else:
            self.good_steps = 0
            self.skipped += 1
            self.scale = max(self.scale / 2.0, self.min_scale)

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state["skipped"])
