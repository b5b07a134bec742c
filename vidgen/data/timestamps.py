"""Capture times of time-stamped frames: from file names, EXIF, or a sidecar CSV/JSON.

Times are timezone-aware UTC datetimes (names and EXIF without an offset are taken as UTC,
as in the AMOS webcam archive). Nothing is guessed: a name that does not match, a date that
does not exist (Feb 30) or an hour of 25 is reported as unparseable with the reason, and
duplicates and out-of-order times (relative to the natural sort of the names) are reported.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from vidgen.data.images import open_image
from vidgen.errors import DataError

# Built-in name patterns (strftime syntax), tried in this order by ``source="auto"``.
NAME_PATTERNS = ("%Y%m%d_%H%M%S", "%Y-%m-%d-%H-%M-%S", "%Y-%m-%dT%H_%M_%S", "%Y-%m-%dT%H-%M-%S")
SIDECAR_NAMES = ("times.csv", "times.json", "timestamps.csv", "timestamps.json")
_FIELDS = {"Y": ("year", r"\d{4}"), "m": ("month", r"\d{2}"), "d": ("day", r"\d{2}"),
           "H": ("hour", r"\d{2}"), "M": ("minute", r"\d{2}"), "S": ("second", r"\d{2}"),
           "f": ("microsecond", r"\d{1,6}"), "y": ("year2", r"\d{2}"), "j": ("yday", r"\d{3}")}


@dataclass
class TimeReport:
    """Per-file times (None where unparseable) and what is wrong with the sequence."""

    files: list[str]
    times: list[datetime | None]
    method: str                                               # "name:PATTERN" | "exif" | "sidecar:FILE"
    unparseable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    duplicates: list[list[str]] = field(default_factory=list)         # groups sharing one time
    out_of_order: list[str] = field(default_factory=list)             # earlier than a predecessor

    @property
    def ok(self) -> bool:
        return not (self.unparseable or self.duplicates or self.out_of_order)

    def valid(self) -> list[tuple[str, datetime]]:
        return [(f, t) for f, t in zip(self.files, self.times) if t is not None]

    def summary(self) -> str:
        n = sum(t is not None for t in self.times)
        return (f"{n}/{len(self.files)} times from {self.method}; {len(self.unparseable)} unparseable, "
                f"{len(self.duplicates)} duplicate groups, {len(self.out_of_order)} out of order")

    def to_json(self) -> dict:
        return {"method": self.method,
                "unparseable": [{"file": f, "reason": r} for f, r in self.unparseable],
                "duplicates": self.duplicates, "out_of_order": self.out_of_order}


def compile_pattern(pattern: str) -> re.Pattern:
    """strftime-like pattern -> regex anchored at the start of the file stem.

    Trailing text after the time is allowed (``20210301_120000 (1)``); a literal digit in the
    pattern (as the trailing 0 of ``%Y_%m%d_%H%M0``) must match exactly.
    """
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            code = pattern[i + 1]
            if code == "%":
                out.append("%")
            elif code in _FIELDS:
                name, rx = _FIELDS[code]
                out.append(f"(?P<{name}>{rx})")
            else:
                raise DataError(f"time pattern '{pattern}': %{code} is not supported "
                                f"(use %{', %'.join(_FIELDS)})")
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"(?!\d)")


def parse_name(name: str, pattern: str) -> datetime:
    """Capture time from a file name; ValueError with the reason when it has none."""
    stem = Path(name).stem
    m = compile_pattern(pattern).match(stem)
    if not m:
        raise ValueError(f"name does not match {pattern}")
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    year = g.get("year", 2000 + g.get("year2", 0) if "year2" in g else None)
    if year is None:
        raise ValueError(f"pattern {pattern} has no year")
    try:
        if "yday" in g:
            day = datetime(year, 1, 1) + timedelta(days=g["yday"] - 1)
            month, mday = day.month, day.day
        else:
            month, mday = g.get("month", 1), g.get("day", 1)
        frac = m.group("microsecond") if "microsecond" in g else None
        micro = int(frac.ljust(6, "0")) if frac else 0
        return datetime(year, month, mday, g.get("hour", 0), g.get("minute", 0),
                        g.get("second", 0), micro, tzinfo=timezone.utc)
    except ValueError as exc:  # Feb 30, hour 25 ...
        raise ValueError(f"invalid date or time in name ({exc})") from None


def read_exif_time(path: str | Path) -> datetime:
    """EXIF DateTimeOriginal (else DateTime), with OffsetTimeOriginal when present, as UTC."""
    try:
        with open_image(path, str(path)) as im:  # the header only, size checked
            if im.format not in ("JPEG", "WEBP", "TIFF") and "exif" not in im.info:
                raise ValueError("no EXIF before the pixels (PNG and others: name the file by its time)")
            exif = im.getexif()
            sub = exif.get_ifd(0x8769)
    except (DataError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read EXIF ({exc})") from None
    text = sub.get(36867) or exif.get(306)
    if not text:
        raise ValueError("no EXIF DateTimeOriginal or DateTime")
    try:
        t = datetime.strptime(str(text).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"EXIF time '{text}' is not YYYY:MM:DD HH:MM:SS") from None
    offset = sub.get(36881)  # OffsetTimeOriginal, e.g. "+02:00"
    if offset and re.fullmatch(r"[+-]\d{2}:\d{2}", str(offset)):
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        return (t - sign * delta).replace(tzinfo=timezone.utc)
    return t.replace(tzinfo=timezone.utc)


def parse_time_value(value) -> datetime:
    """Sidecar value: ISO 8601 text (no zone = UTC) or seconds since the epoch."""
    if isinstance(value, (int, float)) or re.fullmatch(r"-?\d+(\.\d+)?", str(value).strip()):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    try:
        t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value}' is not an ISO 8601 time or epoch seconds") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def read_sidecar(path: str | Path) -> dict[str, object]:
    """{file name: raw time value} from CSV (columns file,time) or JSON ({name: time} or
    a list of {"file", "time"})."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return {str(k): v for k, v in data.items()}
            return {str(r["file"]): r["time"] for r in data}
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return {r["file"].strip(): r["time"] for r in rows}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: cannot read capture times ({exc}); expected CSV columns "
                        "'file,time' or JSON {{file: time}}") from None


def _finish(files: list[str], times: list, method: str, bad: list) -> TimeReport:
    rep = TimeReport(files=files, times=times, method=method, unparseable=bad)
    seen: dict[datetime, list[str]] = {}
    for f, t in zip(files, times):
        if t is not None:
            seen.setdefault(t, []).append(f)
    rep.duplicates = [g for g in seen.values() if len(g) > 1]
    latest = None
    for f, t in zip(files, times):
        if t is None:
            continue
        if latest is not None and t < latest:
            rep.out_of_order.append(f)
        latest = t if latest is None else max(latest, t)
    return rep


def capture_times(files, source: str = "auto", pattern: str | None = None,
                  sidecar: str | Path | None = None) -> TimeReport:
    """Capture times of ``files`` (paths, in sequence order).

    source: "name" (``pattern``, else the built-in pattern matching most names), "exif",
    "sidecar" (``sidecar`` file, else times.csv/json beside the frames), or "auto": a given
    pattern or sidecar, else a sidecar beside the frames, else names if any built-in pattern
    matches, else EXIF.
    """
    files = [Path(f) for f in files]
    names = [f.name for f in files]
    folder = files[0].parent if files else Path(".")
    if source == "auto":
        if pattern:
            source = "name"
        elif sidecar or any((folder / s).is_file() for s in SIDECAR_NAMES):
            source = "sidecar"
        elif any(compile_pattern(p).match(Path(n).stem) for p in NAME_PATTERNS for n in names):
            source = "name"
        else:
            source = "exif"
    times, bad = [], []
    if source == "name":
        if pattern is None:
            pattern = max(NAME_PATTERNS, key=lambda p: sum(bool(compile_pattern(p).match(Path(n).stem))
                                                           for n in names))
        compile_pattern(pattern)  # a bad pattern is the user's error, not the file's
        method = f"name:{pattern}"
        for n in names:
            try:
                times.append(parse_name(n, pattern))
            except ValueError as exc:
                times.append(None)
                bad.append((n, str(exc)))
    elif source == "exif":
        method = "exif"
        for f in files:
            try:
                times.append(read_exif_time(f))
            except ValueError as exc:
                times.append(None)
                bad.append((f.name, str(exc)))
    elif source == "sidecar":
        side = Path(sidecar) if sidecar else next(folder / s for s in SIDECAR_NAMES if (folder / s).is_file())
        table = read_sidecar(side)
        method = f"sidecar:{side.name}"
        for n in names:
            if n not in table:
                times.append(None)
                bad.append((n, f"not listed in {side.name}"))
                continue
            try:
                times.append(parse_time_value(table[n]))
            except ValueError as exc:
                times.append(None)
                bad.append((n, str(exc)))
    else:
        raise DataError(f"unknown time source '{source}': use auto, name, exif or sidecar")
    return _finish([str(n) for n in names], times, method, bad)


_INTERVAL = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|sec|m|min|h|d|w)?\s*")
_UNIT = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_interval(text: str | float) -> float:
    """'60s', '15m', '1.5h', '1d', '500ms' or a number of seconds -> seconds (> 0)."""
    m = _INTERVAL.fullmatch(str(text))
    value = float(m.group(1)) * _UNIT[m.group(2) or "s"] if m else float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise DataError(f"--interval {text!r}: expected a positive time between frames, e.g. 60s, 15m or 1h")
    return value


def parse_start(text: str) -> datetime:
    """The capture time of a video's first frame: ISO 8601 (no zone = UTC) or epoch seconds."""
    try:
        return parse_time_value(text)
    except (ValueError, OverflowError, OSError):
        raise DataError(f"--start {text!r}: expected an ISO 8601 time such as 2023-06-13T03:11:46 "
                        "(UTC unless it has an offset)") from None


def video_times(start: str | None, interval: float, indices, path: str, creation_time: str | None) -> list[datetime]:
    """Capture times of a time-lapse delivered as one video: frame i at start + i * interval
    (docs/METHODS.md section 12).
    Without ``start`` the container's creation time is taken as the first frame's."""
    if start:
        t0 = parse_start(start)
    elif creation_time:
        try:
            t0 = parse_time_value(creation_time)
        except ValueError:
            raise DataError(f"{path}: its creation time {creation_time!r} is not a time; pass --start") from None
    else:
        raise DataError(f"{path}: the video records no creation time, so its frames have no capture "
                        "times; pass --start with the time of the first frame, e.g. --start 2023-06-13T03:11:46")
    return [t0 + timedelta(seconds=float(i) * interval) for i in indices]
