"""Capture time -> conditioning vector, and the timestamp noise (docs/METHODS.md section 2).

- A sequence's time axis starts at 00:00 UTC of its first capture day and spans ``num_days``
  whole days (the span rounded up), so the normalised time is ``t = (s - start) / span`` in
  [0, 1] and the daily phase of ``t`` is exactly the UTC clock time.
- Frequencies in cycles per sequence: yearly ``num_days / 365.25``, daily ``num_days``; one is
  used only if it is above 1 (no yearly term for sequences shorter than a year).
- The conditioning vector is ``c = [1, 0.01 t, cos 2pi f_y t, sin 2pi f_y t, cos 2pi f_d t,
  sin 2pi f_d t]`` (0.01 is ``lin_scale``). With ``trend_harmonics`` K > 0 (an extension for
  short footage, not the method) the trend also enters as ``lin_scale * (cos pi k t, sin pi k t)``,
  k = 1..K, at the end of c. Each *factor* (trend, year, day) can be given its own t, so the trend can
  move while the time of day is held ("per-frequency overrides"); a t of shape
  ``[B, L, F]`` gives every generator layer (w index) its own factor times.
- Dequantisation: every real and generated t gets ``N(0, (0.5 * largest gap to a
  neighbouring frame)^2)`` noise. The discriminator also sees per-factor noise (trend 20% of
  the sequence, yearly 4 days, daily 0), which the reference release computes but never
  applies; here it is applied.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import torch
from torch import nn

from vidgen.errors import ConfigError

DAY = 86400.0
YEAR_DAYS = 365.25
FACTORS = ("trend", "year", "day")


@dataclass(frozen=True)
class TimeAxis:
    """Where t = 0 and t = 1 lie in real time (seconds since the epoch, UTC)."""

    start: float  # epoch seconds of 00:00 UTC on the first capture day
    num_days: int  # sequence span in whole days
    lin_scale: float = 0.01  # the trend enters c as lin_scale * t
    # K > 0: the trend also enters c as lin_scale * (cos pi k t, sin pi k t), k = 1..K (not in
    # the method: a trend that can bend over the sequence, for short footage; 0 = the method)
    trend_harmonics: int = 0

    @classmethod
    def from_times(cls, seconds, lin_scale: float = 0.01) -> "TimeAxis":
        s = np.asarray(seconds, dtype=np.float64)
        if s.size == 0:
            raise ConfigError("no capture times: the dataset has no time-stamped frames")
        start = math.floor(s.min() / DAY) * DAY
        num_days = max(1, math.ceil((s.max() - start) / DAY))
        return cls(start=float(start), num_days=int(num_days), lin_scale=lin_scale)

    @property
    def span(self) -> float:
        return self.num_days * DAY

    @property
    def factors(self) -> tuple[str, ...]:
        """Factors with a t of their own: the trend always, year and day when f > 1."""
        f_year, f_day = self.num_days / YEAR_DAYS, float(self.num_days)
        return ("trend",) + (("year",) if f_year > 1 else ()) + (("day",) if f_day > 1 else ())

    @property
    def frequencies(self) -> list[float]:
        """Cycles per sequence of each periodic factor, in the order of ``factors[1:]``."""
        return [{"year": self.num_days / YEAR_DAYS, "day": float(self.num_days)}[f] for f in self.factors[1:]]

    @property
    def c_dim(self) -> int:
        return 2 * len(self.factors) + 2 * self.trend_harmonics

    def normalize(self, seconds) -> np.ndarray:
        return (np.asarray(seconds, dtype=np.float64) - self.start) / self.span

    def seconds(self, t) -> np.ndarray:
        return np.asarray(t, dtype=np.float64) * self.span + self.start

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TimeAxis":
        return cls(start=float(d["start"]), num_days=int(d["num_days"]), lin_scale=float(d.get("lin_scale", 0.01)),
                   trend_harmonics=int(d.get("trend_harmonics", 0)))


# --- c = [1, 0.01 t, cos, sin, ...] ------------------------------------------------------------
def factor_times(t: torch.Tensor, num_factors: int) -> torch.Tensor:
    """t: [B] (one time for every factor), [B, F] or [B, L, F] -> [B, F] or [B, L, F]."""
    if t.ndim == 1:
        return t[:, None].expand(t.shape[0], num_factors)
    assert t.shape[-1] == num_factors, f"t has {t.shape[-1]} factor times, the axis has {num_factors}"
    return t


class TimeFeatures(nn.Module):
    """The Fourier conditioning of docs/METHODS.md 2 (no parameters). The axis lives in buffers so
    a network's state dict says which sequence it was trained on.

    ``phase="float64"`` computes 2 pi f t in double precision; ``"float32"`` rounds it as the
    reference release does (float32 2 pi times the float32 frequency, times the float32 t):
    about 1e-4 rad of difference at a daily frequency of a thousand cycles, which a network
    trained by the reference has seen, so imported networks use it."""

    def __init__(self, axis: TimeAxis, phase: str = "float64"):
        super().__init__()
        assert phase in ("float64", "float32"), phase
        self.register_buffer("freqs", torch.tensor(axis.frequencies, dtype=torch.float64))
        self.register_buffer("axis_start", torch.tensor(axis.start, dtype=torch.float64))
        self.register_buffer("axis_days", torch.tensor(float(axis.num_days), dtype=torch.float64))
        self.lin_scale = axis.lin_scale
        self.trend_harmonics = axis.trend_harmonics
        self.num_factors = len(axis.factors)
        self.c_dim = axis.c_dim
        self.phase = phase

    @property
    def axis(self) -> TimeAxis:
        return TimeAxis(float(self.axis_start), int(self.axis_days), self.lin_scale, self.trend_harmonics)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # t: [B], [B, F] or [B, L, F] (normalised times per factor) -> c: [..., c_dim]
        t = factor_times(t, self.num_factors)
        dtype = t.dtype if t.dtype.is_floating_point else torch.float32
        if self.phase == "float32":
            t32 = t.to(torch.float32)
            two_pi_f = torch.tensor(2 * math.pi, dtype=torch.float32, device=t.device) * self.freqs.float()
            phases = [two_pi_f[i] * t32[..., i + 1] for i in range(self.num_factors - 1)]
            trend = t32[..., 0]
        else:
            # float64 for the phase: f_d * t is in the thousands of cycles for long sequences.
            t64 = t.to(torch.float64)
            phases = [2 * math.pi * self.freqs[i] * t64[..., i + 1] for i in range(self.num_factors - 1)]
            trend = t64[..., 0]
        scale = torch.tensor(self.lin_scale, dtype=trend.dtype, device=t.device)
        parts = [torch.ones_like(trend), scale * trend]
        for phase in phases:
            parts += [torch.cos(phase), torch.sin(phase)]
        for k in range(1, self.trend_harmonics + 1):
            parts += [scale * torch.cos(math.pi * k * trend), scale * torch.sin(math.pi * k * trend)]
        return torch.stack(parts, dim=-1).to(dtype)


# --- timestamp noise ---------------------------------------------------------------------------
def dequant_sigmas(t: np.ndarray) -> np.ndarray:
    """Per-frame sigma = 0.5 * largest gap to a neighbouring frame (in t units). t: [N]."""
    t = np.asarray(t, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    gaps = np.diff(ts)
    left = np.concatenate([[0.0], gaps])
    right = np.concatenate([gaps, [0.0]])
    sig = np.empty_like(t)
    sig[order] = 0.5 * np.maximum(left, right)
    return sig


def dequantize(t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """t + N(0, sigma^2), same noise for every factor of a frame. t: [B] or [B, F]; sigma: [B]."""
    n = torch.randn_like(sigma) * sigma
    return t + (n if t.ndim == 1 else n[:, None])


@dataclass
class TimeNoise:
    """Per-factor noise on the discriminator's view of t, as standard deviations."""

    trend: float = 0.2  # fraction of the sequence
    year_days: float = 4.0
    day_days: float = 0.0

    def sigmas(self, axis: TimeAxis) -> list[float]:
        by_name = {"trend": self.trend, "year": self.year_days / axis.num_days, "day": self.day_days / axis.num_days}
        return [by_name[f] for f in axis.factors]


def d_noise(t: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Add independent per-factor noise. t: [B] or [B, F] -> [B, F]."""
    t = factor_times(t, len(sigmas))
    s = torch.tensor(sigmas, dtype=t.dtype, device=t.device)
    return t + torch.randn_like(t) * s


# --- holding and moving factors ----------------------------------------------------------------
def hold(t: torch.Tensor, axis: TimeAxis, held: dict[str, float | None],
         layers: tuple[int, int] | None = None, num_ws: int | None = None) -> torch.Tensor:
    """Replace the t of some factors by fixed values (normalised t; None keeps it).

    t: [B] or [B, F]. Without ``layers`` returns [B, F]; with ``layers = (first, stop)`` and
    ``num_ws`` returns [B, L, F] where only the w indices first..stop-1 see the held values.
    """
    for name in held:
        if name not in FACTORS:
            raise ConfigError(f"unknown time factor {name!r}; choose from {', '.join(FACTORS)}")
    factors = axis.factors
    base = factor_times(t, len(factors)).clone()
    new = base.clone()
    for name, value in held.items():
        if value is not None and name in factors:
            new[:, factors.index(name)] = value
    if layers is None:
        return new
    assert num_ws is not None
    out = base[:, None, :].repeat(1, num_ws, 1)
    a, b = layers
    out[:, a:b] = new[:, None, :]
    return out


def phase_of_hour(hour: float, axis: TimeAxis) -> float:
    """A normalised t whose daily phase is ``hour`` (UTC) on the first day."""
    return hour * 3600.0 / axis.span


def phase_of_date(month_day: str, axis: TimeAxis) -> float:
    """A normalised t whose yearly phase matches ``MM-DD`` in the first year of the axis."""
    start = datetime.fromtimestamp(axis.start, tz=timezone.utc)
    try:
        m, d = (int(x) for x in month_day.split("-"))
        when = datetime(start.year, m, d, tzinfo=timezone.utc)
    except ValueError as exc:
        raise ConfigError(f"bad month-day {month_day!r}: expected MM-DD, e.g. 06-21") from exc
    if when.timestamp() < axis.start:
        when = when.replace(year=start.year + 1)
    return float(axis.normalize(when.timestamp()))


# --- date ranges -------------------------------------------------------------------------------
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$")


def parse_every(text: str) -> float:
    """'1d', '6h', '30m', '2w' -> seconds."""
    m = _EVERY.match(text)
    if not m:
        raise ConfigError(f"--every {text!r}: expected a number and a unit m|h|d|w, e.g. 1d or 6h")
    seconds = float(m.group(1)) * {"m": 60, "min": 60, "h": 3600, "d": DAY, "w": 7 * DAY}[m.group(2)]
    if seconds < 1:
        raise ConfigError(f"--every {text!r}: the step between dates must be at least one second")
    return seconds


def parse_date(text: str) -> datetime:
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    raise ConfigError(f"bad date {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


def date_range(spec: str, every: str = "1d", hour: float | None = None) -> np.ndarray:
    """'2021-03-01..2021-10-31' with a step -> epoch seconds (UTC), both ends included.

    With ``hour`` every date is moved to that hour of its day."""
    if ".." not in spec:
        raise ConfigError(f"--dates {spec!r}: expected FIRST..LAST, e.g. 2021-03-01..2021-10-31")
    a, b = (parse_date(x) for x in spec.split("..", 1))
    if b < a:
        raise ConfigError(f"--dates {spec!r}: the last date is before the first")
    step = parse_every(every)
    if hour is not None:
        a = a.replace(hour=0, minute=0, second=0) + timedelta(hours=hour)
    # With an hour the last date's whole day counts; otherwise the range ends at its instant.
    end = b.timestamp() + (DAY - 1e-3 if hour is not None else 1e-3)
    n = max(int(math.floor((end - a.timestamp()) / step)) + 1, 1)
    return a.timestamp() + step * np.arange(n, dtype=np.float64)
