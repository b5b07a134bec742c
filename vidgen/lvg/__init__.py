"""Long-video GAN (docs/METHODS.md 1): temporal latent (latent.py), low-res networks (lowres.py,
lowres_d.py), super-res networks (superres.py), training recipes (recipe.py,
recipe_superres.py), windowed generators over checkpoints (family.py), the importer of
published checkpoints (convert.py) and the `vidgen generate` command (cli.py)."""

from vidgen.registry import Family, register

register(Family(name="lvg-lowres", recipe="vidgen.lvg.recipe:LowResRecipe", kind="video",
                sampler="vidgen.lvg.family:open_lowres", importer="vidgen.lvg.convert:LOWRES_IMPORTER",
                summary="long-video GAN, low-res generator on long clips", group="lvg"))
register(Family(name="lvg-superres", recipe="vidgen.lvg.recipe:SuperResRecipe", kind="video",
                importer="vidgen.lvg.convert_superres:IMPORTER",
                summary="long-video GAN, super-res generator on short clips", group="lvg"))
