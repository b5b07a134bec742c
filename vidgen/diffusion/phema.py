"""Post-hoc EMA reconstruction (EDM2, docs/METHODS.md section 4).

A power-function EMA with exponent gamma, read at step t, averages the weights theta_tau with
the profile ``p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)`` on [0, t] (the
engine's discrete update ``beta_t = (1 - 1/t)^(gamma + 1)`` gives step tau exactly the
integral of p over [tau - 1, tau]). Profiles are linear in the weights, so any target profile
that is a linear combination of the snapshots' profiles gives the matching average as the
same combination of the snapshots. The combination is the least-squares fit in L2 over tau,
whose Gram matrix has the closed form of :func:`profile_dot`.

Train-time tracking (the engine's ``EMASpec(kind="power", sigma_rels=(0.05, 0.10),
snapshot_every=...)``) writes the snapshots; ``vidgen diffusion phema`` reconstructs. It also
reads EDM2's own snapshot pickles (``network-snapshot-<kimg>-<sigma_rel>.pkl``, read code-free
by vidgen.safe_pickle), whose time unit is images seen: ``nimg = ceil(kimg * 1000 / 1024) *
1024`` as EDM2 names them, snapshots at nimg 0 left out. There the reconstruction is the
reference's, operation for operation: the least-squares weights normalised to sum to one,
parameters accumulated in float32 in the order of (nimg, sigma_rel), buffers taken from the
last snapshot, the result stored in float16 like the inputs.

Snapshots are read one at a time: memory holds one snapshot and one sum per target width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import re

from vidgen.errors import VidgenError
from vidgen.fileio import write_safetensors
from vidgen.train.ema import list_snapshots, read_snapshot, sigma_rel_to_gamma

RECON_FORMAT = "vidgen-phema-recon-1"


def profile_dot(t_a, g_a, t_b, g_b) -> np.ndarray:
    """<p_{t_a,g_a}, p_{t_b,g_b}> = integral over [0, min(t_a, t_b)] of the product:
    (g_a+1)(g_b+1) / ((g_a+g_b+1) t_max) * (t_min/t_max)^(g of the longer one). Broadcasts."""
    t_a, g_a, t_b, g_b = (np.asarray(v, np.float64) for v in (t_a, g_a, t_b, g_b))
    a_first = t_a <= t_b
    t_min, t_max = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
    g_long = np.where(a_first, g_b, g_a)
    return (g_a + 1) * (g_b + 1) / ((g_a + g_b + 1) * t_max) * (t_min / t_max) ** g_long


def solve_weights(t_i, g_i, t_r: float, g_r: float) -> np.ndarray:
    """Coefficients x minimising || sum_i x_i p_{t_i,g_i} - p_{t_r,g_r} ||_2. -> [len(t_i)]"""
    t_i, g_i = np.asarray(t_i, np.float64), np.asarray(g_i, np.float64)
    gram = profile_dot(t_i[:, None], g_i[:, None], t_i[None], g_i[None])
    rhs = profile_dot(t_i, g_i, t_r, g_r)
    # The Gram matrix is badly conditioned for dense snapshots: lstsq with a relative cutoff.
    return np.linalg.lstsq(gram, rhs, rcond=1e-13)[0]


def profile_error(t_i, g_i, x, t_r: float, g_r: float) -> float:
    """Relative L2 error ||sum x_i p_i - p_r|| / ||p_r|| of a reconstruction, in closed form."""
    t_i, g_i, x = (np.asarray(v, np.float64) for v in (t_i, g_i, x))
    gram = profile_dot(t_i[:, None], g_i[:, None], t_i[None], g_i[None])
    rhs = profile_dot(t_i, g_i, t_r, g_r)
    rr = profile_dot(t_r, g_r, t_r, g_r)
    err2 = x @ gram @ x - 2 * x @ rhs + rr
    return float(np.sqrt(max(err2, 0.0) / rr))


def discrete_profile(t: int, gamma: float) -> np.ndarray:
    """Weights of theta_1..theta_t in the engine's power EMA at step t: the product of its
    per-step decays, ``(tau^(g+1) - (tau-1)^(g+1)) / t^(g+1)``. -> [t]"""
    tau = np.arange(1, t + 1, dtype=np.float64)
    return (tau / t) ** (gamma + 1) - ((tau - 1) / t) ** (gamma + 1)


def normalised_weights(t_i, g_i, t_r: float, g_r: float) -> np.ndarray:
    """:func:`solve_weights` scaled to sum to one, so a constant tensor reconstructs exactly."""
    x = solve_weights(t_i, g_i, t_r, g_r)
    return x / x.sum()


class Accumulator:
    """Streaming ``sum_i w_i state_i`` for floating tensors, snapshot by snapshot (``add`` in the
    order of the weights). A tensor equal in every snapshot (a buffer such as the Fourier
    frequencies, an integer counter) is copied instead; ``buffers``, when given, names the
    tensors to take from the last snapshot whatever they hold. ``dtype`` is the precision of
    the sums (float64; float32 replays EDM2's reconstruction)."""

    def __init__(self, weights: np.ndarray, dtype: torch.dtype = torch.float64, buffers: set[str] | None = None):
        self.weights, self.dtype, self.buffers = weights, dtype, buffers
        self.sums: dict[str, torch.Tensor] = {}
        self.first: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}
        self.constant: dict[str, bool] = {}
        self.count = 0

    def add(self, state: dict[str, torch.Tensor]) -> None:
        w = float(self.weights[self.count])
        for key, value in state.items():
            if self.count == 0:
                self.first[key], self.constant[key] = value, True
            elif self.constant[key] and not torch.equal(value, self.first[key]):
                self.constant[key] = False
            self.last[key] = value
            if value.is_floating_point() and (self.buffers is None or key not in self.buffers):
                term = value.to(self.dtype) * w
                self.sums[key] = term if key not in self.sums else self.sums[key].add_(term)
        self.count += 1

    def result(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The weighted sums, cast to ``dtype`` (default: each tensor's own)."""
        assert self.count == len(self.weights), "add() every snapshot first"
        out = {}
        for key, last in self.last.items():
            keep = key not in self.sums or (self.buffers is None and self.constant[key])
            out[key] = last.clone() if keep else self.sums[key].to(dtype or last.dtype)
        return out


def combine(states: list[dict[str, torch.Tensor]], weights: np.ndarray) -> dict[str, torch.Tensor]:
    """sum_i w_i state_i (in float64, cast back), tensors equal in every state copied."""
    acc = Accumulator(weights)
    for state in states:
        acc.add(state)
    return acc.result()


def reconstruct(folder: str | Path, sigma_rels: list[float], network: str | None = None,
                step: int | None = None, sources: list[float] | None = None
                ) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Averages for each target ``sigma_rel`` at ``step`` (default: the last snapshot) from
    every snapshot up to that step (only those of the tracked widths ``sources``, if given).
    -> [(state dict, info)]"""
    snaps = list_snapshots(folder, network)
    if sources is not None:
        snaps = [(p, i) for p, i in snaps if any(abs(i["sigma_rel"] - s) < 1e-9 for s in sources)]
    if not snaps:
        raise VidgenError(f"{folder}: no power-EMA snapshots (*.safetensors with vidgen metadata); "
                          "train with ema kind 'power' and snapshot_every > 0")
    nets = sorted({info["network"] for _, info in snaps})
    if len(nets) > 1:
        raise VidgenError(f"{folder} holds snapshots of several networks ({', '.join(nets)}); pass --network")
    t_r = step if step is not None else max(info["step"] for _, info in snaps)
    snaps = [(p, info) for p, info in snaps if info["step"] <= t_r]
    if not snaps:
        raise VidgenError(f"{folder}: no snapshot at or before step {t_r}")
    t_i = [info["step"] for _, info in snaps]
    g_i = [info["gamma"] for _, info in snaps]
    infos, accs = [], []
    for s in sigma_rels:
        g_r = _gamma(s)
        x = normalised_weights(t_i, g_i, t_r, g_r)
        infos.append({"format": RECON_FORMAT, "network": nets[0], "step": int(t_r), "sigma_rel": s, "gamma": g_r,
                      "num_snapshots": len(t_i), "profile_error": profile_error(t_i, g_i, x, t_r, g_r)})
        accs.append(Accumulator(x))
    for p, _ in snaps:
        state = read_snapshot(p)[0]
        for acc in accs:
            acc.add(state)
    return [(acc.result(), info) for acc, info in zip(accs, infos)]


def _gamma(sigma_rel: float) -> float:
    try:
        return sigma_rel_to_gamma(sigma_rel)
    except ValueError as exc:
        raise VidgenError(f"--sigma-rel {sigma_rel}: {exc}") from None


# --- EDM2's snapshot pickles -----------------------------------------------------------------
PICKLE_NAME = re.compile(r"^(.*)-(\d+)-(\d+\.\d+)\.pkl$")


def list_pickles(folder: str | Path) -> list[tuple[Path, int, float]]:
    """(path, nimg, sigma_rel) of EDM2's ``<prefix>-<kimg>-<sigma_rel>.pkl`` under ``folder``,
    sorted by (nimg, sigma_rel)."""
    out = []
    for path in Path(folder).glob("*.pkl"):
        m = PICKLE_NAME.match(path.name)
        if m and path.is_file():
            kimg = int(m.group(2))
            out.append((path, (kimg * 1000 + 999) // 1024 * 1024, float(m.group(3))))
    return sorted(out, key=lambda x: (x[1], x[2]))


def reconstruct_pickles(folder: str | Path, sigma_rels: list[float], nimg: int | None = None,
                        sources: list[float] | None = None) -> list[tuple[dict, dict, dict]]:
    """Averages of EDM2 snapshot pickles (module docstring) for each target ``sigma_rel`` at
    ``nimg`` (default: the last). -> [(vidgen state dict, info, diffusion config)]"""
    from vidgen import safe_pickle
    from vidgen.diffusion.convert import convert_tree

    pkls = list_pickles(folder)
    if sources is not None:
        pkls = [p for p in pkls if any(abs(p[2] - s) < 1e-9 for s in sources)]
    if not pkls:
        raise VidgenError(f"{folder}: no EDM2 snapshot pickles (<prefix>-<kimg>-<sigma_rel>.pkl)")
    t_r = nimg if nimg is not None else max(n for _, n, _ in pkls)
    if not any(n == t_r for _, n, _ in pkls):
        raise VidgenError(f"{folder}: no snapshot at {t_r} images; reconstruct at the time of one of them")
    pkls = [p for p in pkls if 0 < p[1] <= t_r]
    t_i, g_i = [n for _, n, _ in pkls], [sigma_rel_to_gamma(s) for _, _, s in pkls]
    infos, accs = [], []
    for s in sigma_rels:
        g_r = _gamma(s)
        x = normalised_weights(t_i, g_i, t_r, g_r)
        infos.append({"format": RECON_FORMAT, "network": "net", "nimg": int(t_r), "sigma_rel": s, "gamma": g_r,
                      "num_snapshots": len(t_i), "profile_error": profile_error(t_i, g_i, x, t_r, g_r),
                      "weights": x.tolist(), "sources": [p.name for p, _, _ in pkls]})
        accs.append(None)
    config = None
    for path, _, _ in pkls:
        tree = safe_pickle.load(path)
        config, state, _ = convert_tree(tree, path)
        prefix = len("unet.")
        buffers = {("net." + k[prefix:] if k.startswith("unet.") else k)
                   for k in safe_pickle.state_dict(tree["ema"]) if k not in _param_names(tree["ema"])}
        for j, info in enumerate(infos):
            if accs[j] is None:
                accs[j] = Accumulator(np.asarray(info["weights"]), torch.float32, buffers)
            accs[j].add(state)
    return [(acc.result(), info, config) for acc, info in zip(accs, infos)]


def _param_names(record) -> set[str]:
    from vidgen import safe_pickle
    return set(safe_pickle.parameters(record))


def write_reconstruction(path: Path, state: dict[str, torch.Tensor], info: dict[str, Any],
                         config: dict | None = None) -> Path:
    """Atomic safetensors with the info (and the run's config, so `sample` can build the net)."""
    meta = {"vidgen": json.dumps(info)}
    if config is not None:
        meta["config"] = json.dumps(config)
    write_safetensors(path, state, meta)
    return path
