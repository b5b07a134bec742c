"""Long-video GAN (METHODS.md 1): temporal latent (latent.py), low-res networks (lowres.py),
super-res networks (superres.py), training recipes (recipe.py, recipe_superres.py) and the
`vidgen generate` command (cli.py). Rendering of long videos is in vidgen.render.stream."""

from vidgen.registry import Family, register

register(Family(name="lvg-lowres", recipe="vidgen.lvg.recipe:LowResRecipe", kind="video",
                summary="long-video GAN, low-res generator on long clips", group="lvg"))
register(Family(name="lvg-superres", recipe="vidgen.lvg.recipe:SuperResRecipe", kind="video",
                summary="long-video GAN, super-res generator on short clips", group="lvg"))
