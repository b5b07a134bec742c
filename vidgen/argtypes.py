"""Argument types for the command lines: numbers checked when parsed, so a bad value is one
line naming the option (``argument --fps: must be > 0, got '0'``), and a device check.

    p.add_argument("--frames", type=positive_int, default=48)
    p.add_argument("--hour", type=finite_float)
    p.add_argument("--device", type=device_name, default="auto")
"""

from __future__ import annotations

import argparse
import math

import torch

from vidgen.errors import VidgenError


def parse_seeds(text: str, what: str = "--seeds") -> list[int]:
    """'0-15' -> 0..15; '1,5,9' -> [1, 5, 9]; mixed: '0-3,8'. A VidgenError naming ``what``
    for anything else or an empty list."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise VidgenError(f"{what} {text!r}: use a range like 0-15, a list like 1,5,9, or both") from None
    if not out:
        raise VidgenError(f"{what} {text!r} names no seed")
    return out


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def finite_float(text: str) -> float:
    return _number(float, text)


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def non_negative_float_or_inf(text: str) -> float:
    """>= 0, ``inf`` allowed (an open end, e.g. a sigma range); never NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (inf allowed), got {text!r}")
    return value


def resolve_device(name: str, what: str = "--device") -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``, ``mps``;
    a ValueError naming ``what`` for an unknown device or one this machine does not have."""
    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{what} {name!r} is not a device; use auto, cpu or cuda (cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} {name!r}: this torch has no CUDA device (a CPU-only build or no GPU); "
                             "use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {name!r}: there are {torch.cuda.device_count()} CUDA devices")
        return device
    if device.type == "mps" and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available():
        return device
    raise ValueError(f"{what} {name!r} is not available here; use auto, cpu or cuda (cuda:N)")


def device_name(text: str) -> str:
    """argparse type: a device this machine has (``auto`` resolved), as text."""
    try:
        return str(resolve_device(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--device ", "", 1)) from None
