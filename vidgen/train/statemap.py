"""Moving a published state dict onto vidgen's parameter names, key by key, with an account
of every source key (for the importers of `vidgen import`, docs/IMPORT.md).

Every source key ends up in one of three places: moved to a vidgen key, checked as a
*design constant* (a filter the network computes from its config: the value must match what
vidgen designs, up to float32 rounding), or named in an error. Nothing is dropped silently.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from vidgen.nn.stylegan import BLUR


def scalar(v: Any) -> Any:
    """A pickled numpy scalar -> the Python number (other values unchanged)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, dict, str)) else v


class StateMap:
    """``source``: the published tensors (``safe_pickle.state_dict`` names); ``where`` names
    the network in messages. After the moves, :meth:`finish` raises nothing itself: it
    returns the problems (unused keys, shape mismatches, constants that differ)."""

    def __init__(self, source: dict[str, torch.Tensor], where: str):
        self.source, self.where = dict(source), where
        self.out: dict[str, torch.Tensor] = {}
        self.moved: dict[str, str] = {}  # source key -> vidgen key
        self.used: set[str] = set()
        self.problems: list[str] = []
        self.constants = 0

    def has(self, key: str) -> bool:
        return key in self.source

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.source if k.startswith(prefix)]

    def _get(self, key: str) -> torch.Tensor | None:
        if key not in self.source:
            self.problems.append(f"{self.where}: missing tensor {key}")
            return None
        self.used.add(key)
        return self.source[key]

    def move(self, src: str, dst: str) -> None:
        t = self._get(src)
        if t is not None:
            self.out[dst] = t.detach().to(torch.float32) if t.is_floating_point() else t.detach()
            self.moved[src] = dst

    def move_prefix(self, src: str, dst: str, names: tuple[str, ...]) -> None:
        """``src + name`` -> ``dst + name`` for each of ``names`` present in the source."""
        for n in names:
            if src + n in self.source:
                self.move(src + n, dst + n)

    def constant(self, src: str, expected: torch.Tensor | None, verify: bool = True, rtol: float = 1e-5) -> None:
        """A design constant: consumed after checking its shape (and, with ``verify``, its
        values) against what vidgen computes (``expected``; None for 'the identity, absent')."""
        t = self._get(src)
        if t is None:
            return
        self.constants += 1
        if expected is None:
            self.problems.append(f"{self.where}: {src} is a filter where vidgen's network has none")
        elif tuple(t.shape) != tuple(expected.shape):
            self.problems.append(f"{self.where}: {src} has shape {tuple(t.shape)}, vidgen designs "
                                 f"{tuple(expected.shape)}")
        elif verify:
            err = (t.double() - expected.double().to(t.device)).abs().max().item()
            scale = expected.double().abs().max().item() or 1.0
            if err > rtol * scale:
                self.problems.append(f"{self.where}: {src} differs from vidgen's design by {err:.3g} "
                                     f"(max {scale:.3g})")

    def unused(self) -> list[str]:
        return [k for k in self.source if k not in self.used]

    def finish(self) -> list[str]:
        """Problems, including source keys nothing consumed."""
        left = self.unused()
        if left:
            more = f" (+{len(left) - 6} more)" if len(left) > 6 else ""
            self.problems.append(f"{self.where}: {len(left)} tensors vidgen does not know: "
                                 f"{', '.join(left[:6])}{more}")
        return self.problems

    def summary(self) -> str:
        n = len(self.source)
        return (f"{self.where}: {len(self.used)}/{n} tensors used ({len(self.out)} loaded, "
                f"{self.constants} filter constants checked)")


# --- layouts shared by the StyleGAN-family importers ---------------------------------------------

def synthesis_layer_index(name: str) -> int:
    """The index ``i`` of a StyleGAN3 synthesis layer named ``L{i}_{size}_{channels}`` (-1 for
    other names)."""
    m = re.fullmatch(r"L(\d+)(?:_\d+)*", name)
    return int(m.group(1)) if m else -1


def move_alias_free_layer(sm: StateMap, src: str, dst: str, layer: Any, verify: bool = True) -> None:
    """A StyleGAN3 synthesis layer ``src`` (``weight``, ``bias``, ``magnitude_ema``, ``affine.*``)
    onto vidgen's ``dst`` (a ``vidgen.nn.alias_free.SynthesisLayer``, ``layer``); its up- and
    down-sampling filters are design constants checked against the layer's own."""
    sm.move_prefix(src, dst, ("weight", "bias", "magnitude_ema", "affine.weight", "affine.bias"))
    for key, has, buf in (("up_filter", layer.has_fu, layer.up_filter),
                          ("down_filter", layer.has_fd, layer.down_filter)):
        if sm.has(src + key):
            sm.constant(src + key, buf if has else None, verify)


def move_resnet_discriminator(sm: StateMap, top: int, verify: bool = True) -> None:
    """StyleGAN2's residual discriminator from resolution ``top`` down to 4x4:
    ``b{top}.fromrgb`` -> ``fromrgb``, ``b{res}.{conv0,conv1,skip}`` -> ``blocks.{k}.*`` (k = 0
    at ``top``), ``b4.{conv,fc,out}`` -> ``conv``, ``fc``, ``out``; every ``resample_filter``
    is the [1, 3, 3, 1] low-pass (kept by the reference as a 2-D [4, 4] buffer)."""
    sm.move_prefix(f"b{top}.fromrgb.", "fromrgb.", ("weight", "bias"))
    for k, res in enumerate(2 ** i for i in range(int(math.log2(top)), 2, -1)):
        for conv in ("conv0", "conv1", "skip"):
            sm.move_prefix(f"b{res}.{conv}.", f"blocks.{k}.{conv}.", ("weight", "bias"))
    for conv in ("conv", "fc", "out"):
        sm.move_prefix(f"b4.{conv}.", f"{conv}.", ("weight", "bias"))
    blur2d = torch.outer(BLUR, BLUR)
    for key in sm.keys():
        if key.endswith("resample_filter"):
            sm.constant(key, blur2d, verify)
