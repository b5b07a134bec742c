"""Post-hoc EMA reconstruction (EDM2, METHODS.md section 4).

A power-function EMA with exponent gamma, read at step t, averages the weights theta_tau with
the profile ``p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)`` on [0, t] (the
engine's discrete update ``beta_t = (1 - 1/t)^(gamma + 1)`` gives step tau exactly the
integral of p over [tau - 1, tau]). Profiles are linear in the weights, so any target profile
that is a linear combination of the snapshots' profiles gives the matching average as the
same combination of the snapshots. The combination is the least-squares fit in L2 over tau,
whose Gram matrix has the closed form of :func:`profile_dot`.

Train-time tracking (the engine's ``EMASpec(kind="power", sigma_rels=(0.05, 0.10),
snapshot_every=...)``) writes the snapshots; ``vidgen diffusion phema`` reconstructs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def combine(states: list[dict[str, torch.Tensor]], weights: np.ndarray) -> dict[str, torch.Tensor]:
    """sum_i w_i state_i for floating tensors (in float64, cast back). Tensors equal in every
    snapshot (buffers such as Fourier frequencies, integer counters) are copied, not summed:
    the weights sum to 1 only up to the reconstruction error."""
    out = {}
    for key, last in states[-1].items():
        if last.is_floating_point() and not all(torch.equal(s[key], last) for s in states[:-1]):
            acc = torch.zeros_like(last, dtype=torch.float64)
            for w, s in zip(weights, states):
                acc += float(w) * s[key].to(torch.float64)
            out[key] = acc.to(last.dtype)
        else:
            out[key] = last.clone()
    return out


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
    states = [read_snapshot(p)[0] for p, _ in snaps]
    results = []
    for s in sigma_rels:
        try:
            g_r = sigma_rel_to_gamma(s)
        except ValueError as exc:
            raise VidgenError(f"--sigma-rel {s}: {exc}") from None
        x = solve_weights(t_i, g_i, t_r, g_r)
        info = {"format": RECON_FORMAT, "network": nets[0], "step": int(t_r), "sigma_rel": s, "gamma": g_r,
                "num_snapshots": len(t_i), "profile_error": profile_error(t_i, g_i, x, t_r, g_r)}
        results.append((combine(states, x), info))
    return results


def write_reconstruction(path: Path, state: dict[str, torch.Tensor], info: dict[str, Any],
                         config: dict | None = None) -> Path:
    """Atomic safetensors with the info (and the run's config, so `sample` can build the net)."""
    meta = {"vidgen": json.dumps(info)}
    if config is not None:
        meta["config"] = json.dumps(config)
    write_safetensors(path, state, meta)
    return path
