"""The built-in model families and plugins: imported once by the command line so that each
registers itself in :mod:`vidgen.registry`.

A third-party package adds a family by declaring, in its own pyproject.toml::

    [project.entry-points."vidgen.families"]
    my-family = "my_package"        # a module whose import calls vidgen.registry.register
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings

BUILTIN = (
    "vidgen.train.toy",
    "vidgen.lvg",
    "vidgen.diffusion",
    "vidgen.sg3",
    "vidgen.stylegan_t",
    "timelapse",
)

_loaded = False


def load_families() -> None:
    """Import every built-in family package and every ``vidgen.families`` entry point."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a package that is there but broken is an error
                raise
    for ep in importlib.metadata.entry_points(group="vidgen.families"):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not break the built-in commands
            warnings.warn(f"vidgen: model family plugin {ep.name!r} ({ep.value}) failed to load: {exc}")
