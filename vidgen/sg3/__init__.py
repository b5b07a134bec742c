"""StyleGAN3 image family (Karras et al. 2021, docs/METHODS.md 8): networks (networks.py),
training data (data.py), the training recipe (recipe.py), the sampler (family.py), the
conversion of published snapshots (convert.py) and `vidgen sg3 generate` (cli.py)."""

from vidgen.registry import Family, register

register(Family(name="sg3", recipe="vidgen.sg3.recipe:SG3Recipe", sampler="vidgen.sg3.family:open_sampler",
                importer="vidgen.sg3.convert:IMPORTER", kind="image",
                summary="StyleGAN3 (configs T and R), alias-free image generator", group="sg3"))
