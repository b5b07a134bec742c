"""Image diffusion: EDM/EDM2 models, samplers with CFG / autoguidance / guidance interval,
post-hoc EMA, noise-range experts and the 2-D autoguidance toy (docs/DIFFUSION.md)."""

from vidgen.registry import Family, register

register(Family(name="diffusion", recipe="vidgen.diffusion.recipe:DiffusionRecipe",
                sampler="vidgen.diffusion.family:open_sampler", kind="image",
                summary="EDM/EDM2 image diffusion"))
