"""float16 in the highest-resolution layers of StyleGAN-style networks (``num_fp16_res``).

StyleGAN2-ADA and StyleGAN3 train their generators and discriminators in mixed precision:
the layers of the ``num_fp16_res`` highest resolutions take their input activations in
float16 and compute in float16, while weights, styles, the mapping network and every other
layer stay float32; activations are clamped to +-``conv_clamp`` (256) after each conv so they
stay in float16 range. vidgen's layers already cast their weights to the dtype of their input
and clamp; :func:`run_in_fp16` makes one layer take its input in float16 and hand its output
back in float32 (a lossless round trip for the next float16 layer), so the networks stay as
they are and the choice is made per run (``engine.precision``, docs/TRAINING.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

_FLAG = "_fp16_handles"


def fp16_octave(res: int, img_res: int, num_fp16_res: int) -> bool:
    """Whether a block at resolution ``res`` of a ``img_res`` network is one of the
    ``num_fp16_res`` highest (StyleGAN2: ``res >= max(2 ** (log2(img_res) + 1 - n), 8)``)."""
    return num_fp16_res > 0 and res >= max(img_res >> (num_fp16_res - 1), 8)


def _half(x):
    return x.to(torch.float16) if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x


def _full(y):
    if isinstance(y, torch.Tensor):
        return y.float() if y.dtype == torch.float16 else y
    if isinstance(y, (tuple, list)):
        return type(y)(_full(v) for v in y)
    return y


def run_in_fp16(module: nn.Module, inputs: Iterable[int] = (0,)) -> None:
    """Run ``module`` on float16 activations: its positional arguments at ``inputs`` (the
    activations; styles and conditions stay float32) are cast to float16 on the way in and its
    float16 outputs to float32 on the way out. Calling it again changes nothing."""
    if getattr(module, _FLAG, None):
        return
    positions = tuple(inputs)

    def pre(_mod, args):
        return tuple(_half(a) if i in positions else a for i, a in enumerate(args))

    def post(_mod, _args, out):
        return _full(out)

    setattr(module, _FLAG, (module.register_forward_pre_hook(pre), module.register_forward_hook(post)))


def run_in_fp32(module: nn.Module) -> None:
    """Undo :func:`run_in_fp16` on ``module`` and its children."""
    for mod in module.modules():
        for handle in getattr(mod, _FLAG, None) or ():
            handle.remove()
        if getattr(mod, _FLAG, None):
            setattr(mod, _FLAG, None)


def fp16_layers(module: nn.Module) -> list[str]:
    """Names of the layers of ``module`` that run in float16."""
    return [name for name, mod in module.named_modules() if getattr(mod, _FLAG, None)]
