"""Checks on what a checkpoint holds before anything uses it: the fields of ``state.json`` by
type, the resume state by type, the weights by shape and by finiteness.

A ``state.json`` can be edited and its checksum recomputed, so a checksum that matches says
only that the file is whole, not that its fields make sense. Every field is checked here, and a
bad one is a :class:`CheckpointError` naming the file and the field, never a KeyError or a
TypeError deep inside loading.

Non-finite weights (NaN, inf) are refused when a network is read, unless the command runs
inside :func:`allow_nonfinite` (the ``--allow-nonfinite`` option): a diverged checkpoint would
otherwise render garbage and exit 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from typing import Any, Iterator

import torch
from torch import nn

from vidgen.errors import VidgenError


class CheckpointError(VidgenError):
    """A checkpoint that is missing, truncated, corrupted or not in vidgen's format."""


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ALLOW_NONFINITE: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_nonfinite", default=False)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _need(ok: bool, where: str, field: str, expected: str, value: Any) -> None:
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CheckpointError(f"{where}: field {field!r} must be {expected}, not {shown}; "
                              "the file was edited or written by another program")


def check_state_fields(state: dict[str, Any], where: str, expected_files: tuple[str, ...]) -> None:
    """The fields every reader needs: ``files``, ``family``, ``config``, ``step``, ``networks``
    (and ``nimg`` when present)."""
    files = state.get("files")
    _need(isinstance(files, dict), where, "files", "a mapping of file names to sha256 and bytes", files)
    for name in expected_files:
        info = files.get(name)
        _need(isinstance(info, dict), where, f"files.{name}", "a mapping with sha256 and bytes", info)
        _need(isinstance(info.get("sha256"), str) and bool(_SHA256.match(info["sha256"])), where,
              f"files.{name}.sha256", "64 hex digits", info.get("sha256"))
        _need(_is_int(info.get("bytes")) and info["bytes"] >= 0, where, f"files.{name}.bytes",
              "a non-negative integer", info.get("bytes"))
    extra = sorted(set(files) - set(expected_files))
    _need(not extra, where, "files", f"exactly {', '.join(expected_files)}", sorted(files))
    _need(isinstance(state.get("family"), str) and bool(state.get("family")), where, "family",
          "a model family name", state.get("family"))
    _need(isinstance(state.get("config"), dict), where, "config", "a mapping", state.get("config"))
    _need(_is_int(state.get("step")) and state["step"] >= 0, where, "step", "a non-negative integer",
          state.get("step"))
    if "nimg" in state:
        _need(_is_int(state["nimg"]) and state["nimg"] >= 0, where, "nimg", "a non-negative integer", state["nimg"])
    nets = state.get("networks")
    _need(isinstance(nets, list) and bool(nets) and all(isinstance(n, str) and n for n in nets), where,
          "networks", "a non-empty list of network names", nets)


def check_resume_fields(state: dict[str, Any], where: str) -> None:
    """The fields only resuming needs (RNG states, sampler position, counters, optimisers)."""
    for key, ok, expected in (
            ("world_size", _is_int(state.get("world_size")) and state.get("world_size", 0) >= 1, "a positive integer"),
            ("rng", isinstance(state.get("rng"), list) and all(isinstance(r, dict) for r in state["rng"]),
             "a list of RNG states, one per rank (empty: fresh seeds)"),
            ("sampler", isinstance(state.get("sampler"), dict), "a mapping"),
            ("counters", isinstance(state.get("counters"), dict), "a mapping"),
            ("optimizers", isinstance(state.get("optimizers"), dict), "a mapping of optimizer states"),
            ("recipe", "recipe" in state, "the recipe's state")):
        if not ok:
            if key not in state:
                raise CheckpointError(f"{where} has no {key!r}: it can be read but not resumed from "
                                      "(written by another program?); start a new run with its weights instead")
            _need(False, where, key, expected, state.get(key))
    sampler = state["sampler"]
    for key in ("consumed", "seed"):
        _need(_is_int(sampler.get(key)) and sampler.get(key, -1) >= 0, where, f"sampler.{key}",
              "a non-negative integer", sampler.get(key))
    _need(_is_int(sampler.get("dataset_len", -1)), where, "sampler.dataset_len", "an integer",
          sampler.get("dataset_len"))
    for key in ("nonfinite_losses", "nonfinite_grads"):
        _need(_is_int(state["counters"].get(key)) and state["counters"][key] >= 0, where, f"counters.{key}",
              "a non-negative integer", state["counters"].get(key))
    for i, r in enumerate(state["rng"]):
        _need(isinstance(r.get("torch"), str), where, f"rng[{i}].torch", "base64 text", r.get("torch"))
        _need(isinstance(r.get("numpy"), list) and len(r["numpy"]) == 5, where, f"rng[{i}].numpy",
              "a list of 5 values", r.get("numpy"))
        _need(isinstance(r.get("python"), list) and len(r["python"]) == 3, where, f"rng[{i}].python",
              "a list of 3 values", r.get("python"))
    if "time" in state:
        _need(_is_number(state["time"]), where, "time", "a number", state["time"])


# --- weights ---------------------------------------------------------------------------------
@contextlib.contextmanager
def allow_nonfinite(allow: bool = True) -> Iterator[None]:
    """Within the block, networks with NaN / inf weights are read instead of refused."""
    token = _ALLOW_NONFINITE.set(bool(allow))
    try:
        yield
    finally:
        _ALLOW_NONFINITE.reset(token)


def refuse_nonfinite(tensors: dict[str, torch.Tensor], where: str) -> None:
    """CheckpointError if a floating-point tensor holds NaN or inf (unless allowed)."""
    if _ALLOW_NONFINITE.get():
        return
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(
            f"{where} holds non-finite weights (NaN or inf in {len(bad)} of {len(tensors)} tensors, e.g. "
            f"{bad[0]!r}): the run had diverged. Use an earlier checkpoint, or pass --allow-nonfinite "
            "to load it anyway")


def load_network_state(net: nn.Module, state: dict[str, torch.Tensor], where: str, name: str = "") -> None:
    """``net.load_state_dict(state)`` with a CheckpointError naming the first mismatched
    tensors (missing, unexpected, or of another shape) instead of torch's RuntimeError.
    ``where``: the file; ``name``: the network in it."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} in the file, {list(v.shape)} in the network"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{label} {items[0]}{f' and {len(items) - 1} more' if len(items) > 1 else ''}"
                 for label, items in (("wrong shape", shapes), ("missing", missing), ("unexpected", unexpected))
                 if items]
        what = f"the {name} weights" if name else "the weights"
        raise CheckpointError(f"{where}: {what} do not fit the network its config describes ({'; '.join(parts)}); "
                              "was the checkpoint's state.json edited, or does it belong to another run?")
    net.load_state_dict(state)
