"""Benchmark definitions (`datasets/*.yaml`, METHODS.md section 10): load and validate.

`load_benchmark(name)` returns the validated definition as a dict; `vidgen data prepare
--benchmark NAME` and `vidgen eval --benchmark NAME` both use it. Definitions live in the
repository's `datasets/` folder, or in `$VIDGEN_DATASETS` when set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from vidgen.errors import ConfigError

# key -> (type(s), required)
SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "title": ((str,), True),
    "paper": ((str,), True),
    "source": ((dict,), True),
    "licence": ((str,), True),
    "videos": ((int, type(None)), True),       # null: not published
    "clips": ((int, type(None)), True),
    "fps": ((int, float, type(None)), True),
    "resolutions": ((list,), True),
    "split": ((str,), True),
    "real_policy": ((str,), True),
    "protocols": ((list,), True),
    "layout": ((str,), False),
    "hours": ((int, float), False),
    "median_clip_frames": ((int,), False),
    "timestamps": ((str,), False),
    "approx": ((list,), False),                # keys whose values are not confirmed
    "notes": ((str,), False),
}
_RES = re.compile(r"^\d+x\d+$")


def benchmarks_dir() -> Path:
    env = os.environ.get("VIDGEN_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "datasets"


def list_benchmarks() -> list[str]:
    d = benchmarks_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def validate_benchmark(spec: dict, where: str) -> dict:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key in spec:
        if key not in SCHEMA:
            raise ConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(SCHEMA)})")
    for key, (types, required) in SCHEMA.items():
        if key not in spec:
            if required:
                raise ConfigError(f"{where}: missing key {key!r}")
            continue
        if not isinstance(spec[key], types) or isinstance(spec[key], bool):
            names = "/".join("null" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(f"{where}: key {key!r} must be {names}, got {spec[key]!r}")
    if "url" not in spec["source"]:
        raise ConfigError(f"{where}: key 'source.url' is missing")
    for res in spec["resolutions"]:
        if not isinstance(res, str) or not _RES.match(res):
            raise ConfigError(f"{where}: resolution {res!r} must look like HEIGHTxWIDTH, e.g. 144x256")
    for key in ("videos", "clips"):
        if spec[key] is not None and spec[key] <= 0:
            raise ConfigError(f"{where}: key {key!r} must be positive")
    from vidgen.metrics.evaluate import parse_metrics
    from vidgen.metrics.video import POLICIES
    from vidgen.errors import VidgenError

    if spec["real_policy"] not in POLICIES:
        raise ConfigError(f"{where}: real_policy must be one of {', '.join(POLICIES)}")
    try:
        parse_metrics([str(p) for p in spec["protocols"]])
    except VidgenError as exc:
        raise ConfigError(f"{where}: protocols: {exc}") from exc
    for key in spec.get("approx", []):
        if key not in spec:
            raise ConfigError(f"{where}: 'approx' lists {key!r}, which is not a key of the definition")
    return spec


def load_benchmark(name: str) -> dict:
    """Definition of benchmark `name` (a file stem in datasets/, or a path to a YAML file)."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = benchmarks_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_benchmarks()) or f"none found in {benchmarks_dir()}"
        raise ConfigError(f"benchmark {name!r}: no definition at {path} (known: {known})")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    spec = validate_benchmark(spec, str(path))
    if spec["name"] != path.stem:
        raise ConfigError(f"{path}: key 'name' is {spec['name']!r}, expected the file name {path.stem!r}")
    return spec
