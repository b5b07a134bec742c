"""Post-hoc EMA reconstruction for any family (EDM2, docs/METHODS.md section 4).

A power-function EMA with exponent gamma, read at step t, averages the weights theta_tau with
the profile ``p_{t,gamma}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1)`` on [0, t] (the
engine's discrete update ``beta_t = (1 - 1/t)^(gamma + 1)`` gives step tau exactly the
integral of p over [tau - 1, tau]). Profiles are linear in the weights, so any target profile
that is a linear combination of the snapshots' profiles gives the matching average as the
same combination of the snapshots. The combination is the least-squares fit in L2 over tau,
whose Gram matrix has the closed form of :func:`profile_dot`.

Train-time tracking (``ema.kind: power`` with ``snapshot_every > 0`` in any family's config)
writes the snapshots (vidgen/train/ema.py); :func:`reconstruct` combines them, and
:func:`write_phema_run` stores a reconstruction as a run folder that the family's generate
and eval commands take (``vidgen phema``). Snapshots are read one at a time: memory holds one
snapshot and one sum per target width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidgen.errors import VidgenError
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
    # buffers (w_avg, magnitude EMAs, ...) are copied into an EMA, not averaged: the last one's
    buffers = set(snaps[-1][1]["buffers"]) if all("buffers" in info for _, info in snaps) else None
    infos, accs = [], []
    for s in sigma_rels:
        g_r = _gamma(s)
        x = normalised_weights(t_i, g_i, t_r, g_r)
        infos.append({"format": RECON_FORMAT, "network": nets[0], "step": int(t_r), "sigma_rel": s, "gamma": g_r,
                      "num_snapshots": len(t_i), "profile_error": profile_error(t_i, g_i, x, t_r, g_r)})
        accs.append(Accumulator(x, buffers=buffers))
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


# --- a reconstruction as a run folder (`vidgen phema`) -----------------------------------------
def write_phema_run(run: str | Path, sigma_rels: list[float], out: str | Path, step: int | None = None,
                    network: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Reconstruct each of ``sigma_rels`` at ``step`` (default: the last snapshot) from the
    snapshots in ``run``'s ``phema/`` folder and write each as a run folder (``out`` itself for
    one width, ``out/s{sigma_rel:.4f}`` for several): the run's config and its newest
    checkpoint with the EMA network ``{network}_ema`` (the one generate / eval load) replaced by
    the reconstruction, so the family's own commands read it. ``state.json`` records the
    reconstruction under ``phema``. -> [(run folder, info)]"""
    from safetensors.torch import load_file

    from vidgen.fileio import atomic_dir
    from vidgen.train import checkpoint as ckpt

    c = ckpt.read_checkpoint(run)
    run_dir = c.path.parent.parent
    folder = run_dir / "phema"
    if not folder.is_dir():
        raise VidgenError(f"{run_dir} has no phema/ folder; train with ema.kind=power and ema.snapshot_every > 0 "
                          "(e.g. --set ema.kind=power --set ema.snapshot_every=500)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VidgenError(f"--out {out}: already exists and is not empty; choose a new folder")
    results = reconstruct(folder, sigma_rels, network, step)
    networks = load_file(str(c.path / "networks.safetensors"))
    train_tensors = c.train_tensors()
    base = {k: v for k, v in c.state.items() if k not in ("format", "files", "checksum")}
    written = []
    with atomic_dir(out) as tmp:
        for state, info in results:
            key = f"{info['network']}_ema"
            if key not in c.network_names:
                raise VidgenError(f"{c.path} has no network {key!r} for the snapshots of {info['network']!r}")
            own = {k.split("/", 1)[1]: v for k, v in networks.items() if k.startswith(f"{key}/")}
            bad = sorted(set(own) ^ set(state)) or [k for k in own if own[k].shape != state[k].shape]
            if bad:
                raise VidgenError(f"the snapshots in {folder} do not fit {key} of {c.path} (e.g. {bad[0]}); "
                                  "were they written by another run?")
            nets = dict(networks)
            nets.update({f"{key}/{k}": v.to(own[k].dtype).contiguous() for k, v in state.items()})
            sub = tmp if len(results) == 1 else tmp / f"s{info['sigma_rel']:.4f}"
            sub.mkdir(parents=True, exist_ok=True)
            if (run_dir / "config.yaml").is_file():
                (sub / "config.yaml").write_text((run_dir / "config.yaml").read_text())
            record = dict(info, source=str(run_dir.resolve()), checkpoint=c.path.name)
            ckpt.write_checkpoint(ckpt.checkpoint_dir(sub, c.step), nets, train_tensors, dict(base, phema=record))
            written.append((out if sub == tmp else out / sub.name, record))
    return written
