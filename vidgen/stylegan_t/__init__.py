"""StyleGAN-T: a text-conditioned GAN (Sauer et al. 2023; docs/STYLEGAN_T.md): generator
(generator.py), projected discriminator on a frozen DINO ViT (discriminator.py), training
recipe (recipe.py), trained and imported generators as samplers (family.py), the reference
snapshot importer (convert.py) and `vidgen t2i` (cli.py)."""

from vidgen.registry import Family, register

register(Family(name="stylegan-t", recipe="vidgen.stylegan_t.recipe:StyleGANTRecipe",
                sampler="vidgen.stylegan_t.family:open_sampler", importer="vidgen.stylegan_t.convert:IMPORTER",
                kind="image", summary="StyleGAN-T text-to-image GAN (CLIP text encoder, projected DINO D)",
                group="stylegan-t"))
