"""Layers shared by the model families (the bottom layer: imports nothing above it)."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (``sum(p.numel() for p in module.parameters())``); works
    on the ``meta`` device, so paper-size networks are counted without memory."""
    return sum(p.numel() for p in module.parameters())
