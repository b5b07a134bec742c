"""Exponential moving averages of network weights (the three kinds of ``EMASpec``).

- ``beta``: a fixed per-step decay after a linear warm-up (long-video GAN, docs/METHODS.md 1.5):
  ``beta_t = beta * min(t / warmup_steps, 1)``.
- ``halflife``: StyleGAN's half-life in images: ``beta = 0.5 ** (batch / ema_nimg)`` with
  ``ema_nimg = halflife_kimg * 1000``, limited to ``rampup * images_seen`` while ramping up.
- ``power``: EDM2's power-function EMA (docs/METHODS.md 4): ``beta_t = (1 - 1/t) ** (gamma + 1)``
  for each ``sigma_rel`` (``gamma`` the largest root of the section-4 cubic), with snapshots
  every ``snapshot_every`` steps for post-hoc reconstruction.

``t`` is the number of optimiser updates folded into the average so far (1 after the first
step), so the power EMA equals the weights after the first step (beta_1 = 0).

EMA copies stay in eval mode and never receive gradients (EDM2: an EMA copy in train mode
would re-normalise its weights on every forward). Buffers are copied, not averaged.

Power-EMA snapshot files (read by ``vidgen.diffusion.phema``)
-------------------------------------------------------------
One safetensors file per (network, sigma_rel, step) in the run folder's ``phema/``::

    phema/{network}-{step:09d}-s{sigma_rel:.4f}.safetensors

Its tensors are the averaged network's ``state_dict()`` (parameters and buffers, under their
module names, contiguous, on CPU). Its safetensors metadata has one key, ``"vidgen"``, whose
value is a JSON object::

    {"format": "vidgen-phema-1", "network": "net", "step": 4000, "gamma": 6.94...,
     "sigma_rel": 0.1, "nimg": 256000, "buffers": ["..."]}

``buffers`` names the state-dict entries that are buffers (copied into the EMA, not averaged:
w_avg, magnitude EMAs, constants); a reconstruction takes them from the last snapshot. Older
snapshots without the key have every differing floating tensor averaged.

``step`` is ``t`` above (optimiser updates averaged so far) and ``gamma`` the exponent of the
profile, so the snapshot is ``sum_i w_i theta_i`` with power-function weights over steps
``1..step``. :func:`read_snapshot` and :func:`list_snapshots` read them back.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidgen.errors import DataError
from vidgen.fileio import read_safetensors, read_safetensors_metadata, write_safetensors
from vidgen.train.recipe import EMASpec

SNAPSHOT_FORMAT = "vidgen-phema-1"


# --- docs/METHODS.md 4: sigma_rel <-> gamma -------------------------------------------------------
def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """Exponent gamma of the power-function profile with relative width ``sigma_rel``: the
    largest real root of ``g^3 + 7 g^2 + (16 - s^-2) g + 12 - s^-2`` (needs s < 0.2887)."""
    if not 0.0 < sigma_rel < 12 ** -0.5:
        raise ValueError(f"sigma_rel must be in (0, {12 ** -0.5:.4f}); got {sigma_rel}")
    t = sigma_rel ** -2
    roots = np.roots([1.0, 7.0, 16.0 - t, 12.0 - t])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def gamma_to_sigma_rel(gamma: float) -> float:
    """Relative width ``sqrt((g + 1) / ((g + 2)^2 (g + 3)))`` of the power-function profile."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def power_beta(step: int, gamma: float) -> float:
    """Per-step decay ``(1 - 1/t) ** (gamma + 1)`` at update ``t = step`` (>= 1)."""
    assert step >= 1
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


# --- the averages ----------------------------------------------------------------------------
def _frozen_copy(net: nn.Module) -> nn.Module:
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def _lerp_into(ema: nn.Module, net: nn.Module, beta: float) -> None:
    """ema = beta * ema + (1 - beta) * net for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters()]
    n_params = [p.detach() for p in net.parameters()]
    if e_params:
        torch._foreach_lerp_(e_params, n_params, 1.0 - beta)
    for e_buf, n_buf in zip(ema.buffers(), net.buffers()):
        e_buf.copy_(n_buf)


class EMA:
    """EMA copies of one network. ``copies()`` maps checkpoint names to the averaged modules;
    the first is always ``f"{name}_ema"`` (the one renderers load)."""

    def __init__(self, name: str, net: nn.Module, spec: EMASpec):
        self.name, self.spec = name, spec
        self._copies = {f"{name}_ema": _frozen_copy(net)}
        self.last_beta = 0.0

    def copies(self) -> dict[str, nn.Module]:
        return self._copies

    def beta(self, step: int, nimg: int, batch: int) -> float:
        raise NotImplementedError

    def update(self, net: nn.Module, step: int, nimg: int, batch: int) -> None:
        """Fold in ``net`` after optimiser update ``step`` (1-based), ``nimg`` images seen in all,
        ``batch`` images in this step."""
        self.last_beta = self.beta(step, nimg, batch)
        for ema in self._copies.values():
            _lerp_into(ema, net, self.last_beta)

    def snapshot(self, step: int, nimg: int, folder: Path) -> list[Path]:
        return []


class BetaEMA(EMA):
    def beta(self, step: int, nimg: int, batch: int) -> float:
        ramp = min(step / self.spec.warmup_steps, 1.0) if self.spec.warmup_steps > 0 else 1.0
        return self.spec.beta * ramp


class HalflifeEMA(EMA):
    def beta(self, step: int, nimg: int, batch: int) -> float:
        ema_nimg = self.spec.halflife_kimg * 1000.0
        if self.spec.rampup is not None:
            ema_nimg = min(ema_nimg, nimg * self.spec.rampup)
        return 0.5 ** (batch / max(ema_nimg, 1e-8))


class PowerEMA(EMA):
    """One copy per ``sigma_rel``: ``{name}_ema`` for the first, ``{name}_ema_s{sigma_rel:g}``
    for the others; snapshots as described in the module docstring."""

    def __init__(self, name: str, net: nn.Module, spec: EMASpec):
        assert spec.sigma_rels, "power EMA needs at least one sigma_rel"
        self.name, self.spec = name, spec
        self.gammas = [sigma_rel_to_gamma(s) for s in spec.sigma_rels]
        self._copies = {}
        for i, s in enumerate(spec.sigma_rels):
            key = f"{name}_ema" if i == 0 else f"{name}_ema_s{s:g}"
            self._copies[key] = _frozen_copy(net)
        self.last_beta = 0.0

    def update(self, net: nn.Module, step: int, nimg: int, batch: int) -> None:
        for ema, gamma in zip(self._copies.values(), self.gammas):
            self.last_beta = power_beta(step, gamma)
            _lerp_into(ema, net, self.last_beta)

    def snapshot(self, step: int, nimg: int, folder: Path) -> list[Path]:
        every = self.spec.snapshot_every
        if every <= 0 or step % every:
            return []
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for ema, gamma, s in zip(self._copies.values(), self.gammas, self.spec.sigma_rels):
            info = {"format": SNAPSHOT_FORMAT, "network": self.name, "step": step,
                    "gamma": gamma, "sigma_rel": s, "nimg": nimg,
                    "buffers": sorted(k for k, _ in ema.named_buffers())}
            path = folder / f"{self.name}-{step:09d}-s{s:.4f}.safetensors"
            write_safetensors(path, ema.state_dict(), {"vidgen": json.dumps(info)})
            paths.append(path)
        return paths


def make_ema(name: str, net: nn.Module, spec: EMASpec) -> EMA:
    kinds = {"beta": BetaEMA, "halflife": HalflifeEMA, "power": PowerEMA}
    if spec.kind not in kinds:
        from vidgen.errors import ConfigError
        raise ConfigError(f"EMA of {name!r}: unknown kind {spec.kind!r}; choose one of {', '.join(kinds)}")
    return kinds[spec.kind](name, net, spec)


# --- files -----------------------------------------------------------------------------------
def read_snapshot(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A power-EMA snapshot's state dict and its JSON info (network, step, gamma, ...)."""
    meta = read_safetensors_metadata(path)
    if "vidgen" not in meta:
        raise DataError(f"{path} is not a power-EMA snapshot (no 'vidgen' metadata)")
    info = json.loads(meta["vidgen"])
    return read_safetensors(path), info


def list_snapshots(folder: str | Path, network: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(path, info) of every snapshot under ``folder``, sorted by (network, sigma_rel, step);
    only the metadata is read."""
    out = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        meta = read_safetensors_metadata(path)
        if "vidgen" not in meta:
            continue
        info = json.loads(meta["vidgen"])
        if network is None or info.get("network") == network:
            out.append((path, info))
    return sorted(out, key=lambda pi: (pi[1]["network"], pi[1]["sigma_rel"], pi[1]["step"]))
