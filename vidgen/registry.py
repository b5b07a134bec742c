"""Model families register themselves here; the engine, the renderer and the metrics name none.

A family is a package on top of the library (``vidgen.lvg``, ``vidgen.diffusion``,
``timelapse``, ...). When its package is imported it calls :func:`register` with a
:class:`Family`: its name and *where* its parts are, as ``"module:attribute"`` strings that
are imported only when used, so registering costs nothing::

    register(Family(
        name="lvg-lowres",
        recipe="vidgen.lvg.recipe:LowResRecipe",          # vidgen train lvg-lowres
        sampler="vidgen.lvg.family:open_lowres",         # vidgen eval --fake RUN, ...
        importer="vidgen.lvg.convert:LOWRES_IMPORTER",   # vidgen import PICKLE
        kind="video", group="lvg"))                      # vidgen lvg train|generate|eval|import

The command line (`vidgen/families.py`) imports the built-in family packages and any package
that declares the entry point group ``vidgen.families``; library code looks families up by
the name stored in a checkpoint.

The one interface every family gives for sampling (:class:`Sampler`): ``generate(seed, n)``
returns ``uint8 [n, H, W, 3]``. For a *video* family these are frames 0..n-1 of the video
drawn with ``seed``; for an *image* family they are the images of seeds seed..seed+n-1.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from vidgen.errors import ConfigError


@runtime_checkable
class Sampler(Protocol):
    """What `vidgen eval --fake` and the renderer need of a trained generator."""

    kind: str  # "video" | "image"
    frame_size: tuple[int, int]  # (H, W)

    def generate(self, seed: int, n: int) -> Any: ...  # numpy uint8 [n, H, W, 3]


@dataclass(frozen=True)
class Family:
    name: str  # the name in `vidgen train NAME` and in every checkpoint's state.json
    recipe: str = ""  # "module:Class", a vidgen.train.recipe.Recipe subclass ("" if not trainable)
    sampler: str = ""  # "module:function", (checkpoint, device) -> Sampler
    importer: str = ""  # "module:object" converting published checkpoints (see `vidgen import`)
    kind: Literal["video", "image"] = "video"
    summary: str = ""  # one line for --help
    group: str = ""  # `vidgen GROUP train|eval|import|...` (families of one method share a group)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family``; registering the same definition twice is harmless, two different
    definitions under one name are an error."""
    old = _FAMILIES.get(family.name)
    if old is not None and old != family:
        raise ValueError(f"model family {family.name!r} is registered twice with different definitions")
    _FAMILIES[family.name] = family
    return family


def names() -> list[str]:
    return list(_FAMILIES)


def families() -> list[Family]:
    return list(_FAMILIES.values())


def get(name: str) -> Family:
    if name not in _FAMILIES:
        known = ", ".join(_FAMILIES) or "none registered"
        raise ConfigError(f"unknown model family {name!r}; choose one of: {known}")
    return _FAMILIES[name]


def resolve(ref: str, what: str = "") -> Any:
    """The object named by ``"package.module:attribute"``."""
    module_name, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what or ref}: cannot load {ref!r} ({exc})") from exc


def recipe_class(name: str) -> type:
    """The training recipe class of family ``name``."""
    family = get(name)
    if not family.recipe:
        raise ConfigError(f"model family {name!r} cannot be trained with `vidgen train`")
    return resolve(family.recipe, f"family {name!r}")
