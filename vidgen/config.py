"""Typed configs: dataclass defaults <- YAML preset <- ``--set a.b=c`` overrides.

Every family describes its settings as nested dataclasses; a YAML file under ``configs/``
overrides some of them, and the command line overrides single keys::

    cfg = load_config(ToyGANConfig, "configs/toygan-tiny.yaml", ["engine.steps=200"])

A root config class may list keys that have moved in ``RENAMED_KEYS = {"old.key": "new.key"}``
(a plain class attribute, not a field): a YAML file or ``--set`` that uses an old key gets an
error naming the new one, and a stored config (a checkpoint's, read by
:func:`config_from_dict`) is moved to the new keys, with ``RENAMED_VALUES`` translating
values that changed spelling on the way.

Values are checked against the field types (``int``, ``float``, ``bool``, ``str``,
``tuple[...]``, ``list[...]``, ``dict[str, ...]``, ``Optional``/``X | None``, ``Literal``,
nested dataclasses). An unknown key raises :class:`ConfigError` naming the closest valid keys;
a wrong type names the key, the value and the expected type.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from vidgen.fileio import write_bytes
from vidgen.errors import ConfigError

T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _unknown_key(key: str, valid: Iterable[str], where: str) -> ConfigError:
    valid = list(valid)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=3, cutoff=0.5)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f"; did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{where}{hint} (valid keys here: {', '.join(valid)})")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and convert lists to tuples etc.; ConfigError if not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"config key {key!r}: {value!r} is not a valid {_type_name(tp)}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise bad
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(repr, args))}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads `path: 123` as a number
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config key {key!r}: expected {len(args)} values, got {len(value)} ({value!r})")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise bad
    return value


def _moved_to(root: type | None, key: str) -> str | None:
    """The new name of dotted ``key`` (or of the section holding it) if ``root`` renamed it."""
    renamed = getattr(root, "RENAMED_KEYS", None) or {}
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        old = ".".join(parts[:i])
        if old in renamed:
            return ".".join([renamed[old]] + parts[i:])
    return None


def _moved_error(root: type | None, key: str) -> ConfigError | None:
    new = _moved_to(root, key)
    if new is None:
        return None
    return ConfigError(f"config key {key!r} has moved to {new!r} (the same settings in every family); "
                       f"rename it in your YAML or --set {new}=...")


def _build(cls: type[T], data: dict[str, Any], prefix: str = "", base: T | None = None,
           root: type | None = None) -> T:
    """``cls`` from ``base`` (or defaults) with the keys of ``data`` replaced, recursively."""
    root = root or cls
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    obj = base if base is not None else cls()
    changes = {}
    for k, v in data.items():
        if k not in names:
            raise _moved_error(root, prefix + str(k)) or _unknown_key(prefix + str(k), names, "")
        tp = hints[k]
        current = getattr(obj, k)
        if dataclasses.is_dataclass(tp) and isinstance(v, dict):
            changes[k] = _build(tp, v, f"{prefix}{k}.", current, root)
        else:
            changes[k] = _coerce(v, tp, prefix + k)
    return dataclasses.replace(obj, **changes)


def migrate_renamed(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """A copy of the stored config ``d`` with every key of ``cls.RENAMED_KEYS`` moved to its new
    place (sections are merged) and ``cls.RENAMED_VALUES`` applied to the moved values."""
    renamed = getattr(cls, "RENAMED_KEYS", None) or {}
    values = getattr(cls, "RENAMED_VALUES", None) or {}
    out = copy.deepcopy(d or {})
    for old, new in renamed.items():
        *parents, leaf = old.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        if old in values and not isinstance(value, dict):
            value = values[old].get(value, value)
        *new_parents, new_leaf = new.split(".")
        node = out
        for p in new_parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(new_leaf), dict):
            node[new_leaf] = {**value, **node[new_leaf]}
        else:
            node[new_leaf] = value
    return out


def config_from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build ``cls`` from a (possibly partial) nested dict, checking every key and type. This
    reads stored configs (checkpoints, run folders): keys that have moved are moved."""
    return _build(cls, migrate_renamed(cls, d))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) that YAML and JSON can write."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(cfg)


def _field_type(cls: type, dotted: str) -> Any:
    """Type of the field at ``a.b.c`` of ``cls``; ConfigError naming close keys if absent."""
    tp: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"config key {'.'.join(parts[:i])!r} has no sub-keys (cannot set {dotted!r})")
        hints = _hints(tp)
        if part not in hints:
            moved = _moved_error(cls, dotted)
            if moved is not None:
                raise moved
            raise _unknown_key(".".join(parts[: i + 1]), [f.name for f in dataclasses.fields(tp)], "")
        tp = hints[part]
    return tp


def parse_override(cls: type, text: str) -> tuple[list[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], value) with ``c`` read as YAML (or kept raw for str fields)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. engine.steps=200")
    key, raw = (s.strip() for s in text.split("=", 1))
    tp = _field_type(cls, key)
    if tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)
                     and raw.lower() not in ("null", "none", "~")):
        value: Any = raw
    else:
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {text!r}: cannot read value {raw!r} ({exc})") from None
    return key.split("."), _coerce(value, tp, key)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a YAML file such as configs/toygan-tiny.yaml")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                base: T | None = None) -> T:
    """Defaults of ``cls`` (or ``base``), then the YAML file at ``path``, then each ``key=value``
    override."""
    cfg = base if base is not None else cls()
    if path is not None:
        try:
            cfg = _build(cls, load_yaml(path), base=cfg)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        keys, value = parse_override(cls, text)
        nested: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            nested = {k: nested}
        cfg = _build(cls, nested, base=cfg)
    return cfg


def dump_yaml(cfg: Any, path: str | os.PathLike | None = None) -> str:
    """The config as YAML text; also written atomically to ``path`` when given."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    if path is not None:
        write_bytes(path, text.encode())
    return text
