"""Long-video GAN (METHODS.md 1): temporal latent (latent.py), low-res networks (lowres.py),
super-res networks (superres.py), training recipes (recipe.py, recipe_superres.py) and the
`vidgen generate` command (cli.py). Rendering of long videos is in vidgen.render.stream."""
