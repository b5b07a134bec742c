"""Benchmark definitions (``datasets/*.yaml``, docs/METHODS.md section 10): the one reader and
validator, used by ``vidgen data prepare --benchmark`` and by ``vidgen eval --benchmark``.

A definition is looked up by name in ``$VIDGEN_DATASETS`` (folders separated by the path
separator) when set, else in ``./datasets`` and then in the repository's ``datasets/``; a
path ending in ``.yaml`` / ``.yml`` is read directly. Protocol names are checked here only
for form; the evaluation suite resolves them (``vidgen.metrics.evaluate.benchmark_metrics``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vidgen.fileio import sha256_file
from vidgen.errors import ConfigError

# How real clips are drawn for video metrics (docs/METHODS.md 9: published FVDs differ by it):
# one clip per video, or uniformly over every clip window of the dataset.
REAL_POLICIES = ("per_video", "uniform")

_NULL = type(None)
# YAML key -> (accepted types, required)
SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),                    # = the file name
    "title": ((str,), True),
    "paper": ((str,), True),
    "source": ((dict,), True),                 # url (+ notes)
    "licence": ((str,), True),
    "videos": ((int, _NULL), True),            # null: depends on what a user can download
    "clips": ((int, _NULL), True),
    "fps": ((int, float, _NULL), True),
    "resolutions": ((list,), True),            # ["HEIGHTxWIDTH", ...]
    "split": ((str,), True),
    "real_policy": ((str,), True),             # one of REAL_POLICIES
    "protocols": ((list,), True),              # metric names of `vidgen eval`
    "layout": ((str,), False),
    "hours": ((int, float), False),
    "median_clip_frames": ((int,), False),
    "timestamps": ((str,), False),
    "approx": ((list,), False),                # keys whose values are not confirmed
    "notes": ((str,), False),
}
_RES = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class Benchmark:
    """A validated definition; ``path`` and ``sha256`` say which file it was read from."""

    name: str
    title: str
    paper: str
    source: dict
    licence: str
    videos: int | None
    clips: int | None
    fps: float | None
    resolutions: list[str]
    split: str
    real_policy: str
    protocols: list[str]
    layout: str | None = None
    hours: float | None = None
    median_clip_frames: int | None = None
    timestamps: str | None = None
    approx: list[str] = field(default_factory=list)
    notes: str | None = None
    path: Path = Path()
    sha256: str = ""

    def resolution_sizes(self) -> list[tuple[int, int]]:
        """[(height, width), ...] of ``resolutions``."""
        return [(int(m[1]), int(m[2])) for m in (_RES.match(r) for r in self.resolutions)]

    def summary(self) -> dict:
        """What a dataset manifest or an evaluation report records about the definition."""
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256,
                "clips": self.clips, "videos": self.videos, "fps": self.fps,
                "resolutions": list(self.resolutions)}


assert set(SCHEMA) == {f.name for f in dataclasses.fields(Benchmark)} - {"path", "sha256"}


def search_dirs() -> list[Path]:
    env = os.environ.get("VIDGEN_DATASETS")
    dirs = ([Path(d) for d in env.split(os.pathsep) if d] if env else
            [Path.cwd() / "datasets", Path(__file__).resolve().parents[2] / "datasets"])
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def list_benchmarks() -> list[str]:
    """Names of every definition found in the search folders."""
    return sorted({p.stem for d in search_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def find_benchmark(name: str | os.PathLike) -> Path:
    """The definition file of ``name`` (a benchmark name, or a path to a YAML file)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"benchmark definition {path} not found: check the path")
        return path
    for d in search_dirs():
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = ", ".join(list_benchmarks()) or "none"
    raise ConfigError(f"benchmark '{name}': definition datasets/{name}.yaml not found (looked in "
                      f"{', '.join(str(d) for d in search_dirs())}; known: {known}); add it, "
                      "or pass the path of a YAML file")


def validate_benchmark(spec, where: str) -> dict:
    """Check keys, types and values of a parsed definition; returns it (a dict)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping of benchmark settings at the top level")
    for key in spec:
        if key not in SCHEMA:
            raise ConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(SCHEMA)})")
    for key, (types, required) in SCHEMA.items():
        if key not in spec:
            if required:
                raise ConfigError(f"{where}: missing key {key!r} (see datasets/README.md)")
            continue
        if not isinstance(spec[key], types) or isinstance(spec[key], bool):
            names = "/".join("null" if t is _NULL else t.__name__ for t in types)
            raise ConfigError(f"{where}: key {key!r} must be {names}, got {spec[key]!r}")
    if not isinstance(spec["source"].get("url"), str):
        raise ConfigError(f"{where}: key 'source.url' is missing")
    if not spec["resolutions"]:
        raise ConfigError(f"{where}: key 'resolutions' is empty; list at least one, e.g. [144x256]")
    for res in spec["resolutions"]:
        m = _RES.match(res) if isinstance(res, str) else None
        if m is None or int(m[1]) <= 0 or int(m[2]) <= 0:
            raise ConfigError(f"{where}: resolution {res!r} must look like HEIGHTxWIDTH, e.g. 144x256")
    for key in ("videos", "clips", "fps"):
        if spec[key] is not None and spec[key] <= 0:
            raise ConfigError(f"{where}: key {key!r} must be positive (or null when not fixed)")
    if spec["real_policy"] not in REAL_POLICIES:
        raise ConfigError(f"{where}: key 'real_policy' must be one of {', '.join(REAL_POLICIES)}, "
                          f"got {spec['real_policy']!r}")
    if not spec["protocols"] or not all(isinstance(p, str) and p for p in spec["protocols"]):
        raise ConfigError(f"{where}: key 'protocols' must be a non-empty list of metric names, "
                          "e.g. [fvd2048_16f, fid50k_full]")
    for key in spec.get("approx", []):
        if key not in spec:
            raise ConfigError(f"{where}: 'approx' lists {key!r}, which is not a key of the definition")
    return spec


def load_benchmark(name: str | os.PathLike) -> Benchmark:
    """Read and validate the definition ``name`` (see the module docstring for the lookup)."""
    path = find_benchmark(name)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable YAML file ({exc})") from None
    spec = validate_benchmark(spec, str(path))
    if spec["name"] != path.stem:
        raise ConfigError(f"{path}: key 'name' is {spec['name']!r}, expected the file name {path.stem!r}")
    return Benchmark(**spec, path=path, sha256=sha256_file(path))


def check_prepared(bench: Benchmark, manifest: dict) -> list[str]:
    """Differences between a prepared dataset (its manifest) and the definition: clip count,
    frame rate of the clips that have one, and resolutions; empty when it matches."""
    problems, where = [], bench.path.name
    clips = manifest["clips"]
    if bench.clips is not None and bench.clips != len(clips):
        problems.append(f"{len(clips)} clips, {where} expects {bench.clips}")
    if bench.fps is not None:
        rates = sorted({round(float(c["fps"]), 3) for c in clips if c.get("fps")})
        if rates and rates != [round(float(bench.fps), 3)]:
            problems.append(f"fps {rates}, {where} expects {bench.fps}")
    missing = [r for r, (h, w) in zip(bench.resolutions, bench.resolution_sizes())
               if f"{h}x{w}" not in manifest["resolutions"]]
    if missing:
        problems.append(f"resolutions {missing} missing ({where} lists {', '.join(bench.resolutions)})")
    return problems
