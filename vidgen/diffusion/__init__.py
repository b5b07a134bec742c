"""Image diffusion: EDM/EDM2 models, samplers with CFG / autoguidance / guidance interval,
post-hoc EMA, noise-range experts and the 2-D autoguidance toy (docs/DIFFUSION.md)."""

from vidgen.registry import Family, register

register(Family(name="diffusion", recipe="vidgen.diffusion.recipe:DiffusionRecipe", kind="image",
                sampler="vidgen.diffusion.generate:open_sampler", importer="vidgen.diffusion.convert:IMPORTER",
                summary="EDM/EDM2 image diffusion", group="diffusion"))
