"""Running statistics: buffers that training updates from the batch it sees.

StyleGAN's tracked average of w (``w_avg``), the magnitude EMAs of StyleGAN3 and of the
long-video GAN, and StyleGAN2's path-length target are running means that a layer moves
towards a statistic of its current batch (``buf.lerp_(stat, 1 - beta)``). They are not
trained by gradients, so multi-process training has to keep them identical on every rank
itself: a layer registers such a buffer with :func:`register_statistic`, and the training
engine averages what each rank and accumulation round did to it (``vidgen/train/sync.py``).
Every other buffer is a constant of the network (filters, Fourier frequencies, fixed noise).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

_ATTR = "_running_statistics"  # names of the module's own buffers that are running statistics


def register_statistic(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """``module.register_buffer(name, value)`` (persistent), marked as a running statistic."""
    assert value.is_floating_point(), f"running statistic {name!r} must be a floating-point tensor"
    module.register_buffer(name, value)
    module.__dict__.setdefault(_ATTR, set()).add(name)


def running_statistics(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(qualified name, buffer) of every running statistic in ``module`` and its children, in
    ``named_modules`` order."""
    for mod_name, mod in module.named_modules():
        for name in sorted(getattr(mod, _ATTR, ())):
            buf = mod._buffers.get(name)
            if buf is not None:
                yield f"{prefix}{mod_name + '.' if mod_name else ''}{name}", buf
