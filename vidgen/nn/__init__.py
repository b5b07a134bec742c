"""Layers shared by the model families (the bottom layer: imports nothing above it)."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (``sum(p.numel() for p in module.parameters())``); works
    on the ``meta`` device, so paper-size networks are counted without memory."""
    return sum(p.numel() for p in module.parameters())


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor stored channels-last (and not also plain contiguous)."""
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
