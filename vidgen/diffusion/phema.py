"""Post-hoc EMA reconstruction for diffusion runs (EDM2, docs/METHODS.md section 4); the
family-neutral part (profiles, least squares, :func:`reconstruct`) is vidgen/train/phema.py,
re-exported here; its docstring gives the profiles and the least-squares combination.

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
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidgen.errors import VidgenError
from vidgen.fileio import write_safetensors
from vidgen.train.ema import sigma_rel_to_gamma
from vidgen.train.phema import (RECON_FORMAT, Accumulator, _gamma, combine, discrete_profile,  # noqa: F401
                                normalised_weights, profile_dot, profile_error, reconstruct, solve_weights)


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
