"""Names accepted by `vidgen train FAMILY`, mapped to their recipe classes (imported lazily)."""

from __future__ import annotations

import importlib

from vidgen.errors import ConfigError

FAMILIES: dict[str, str] = {
    "toygan": "vidgen.train.toy:ToyGANRecipe",
    "lvg-lowres": "vidgen.lvg.recipe:LowResRecipe",
    "lvg-superres": "vidgen.lvg.recipe:SuperResRecipe",
    "timelapse": "timelapse.recipe:TimelapseRecipe",
    "diffusion": "vidgen.diffusion.recipe:DiffusionRecipe",
}


def recipe_class(family: str):
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; choose one of: {', '.join(FAMILIES)}")
    module_name, _, attr = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module_name), attr)
