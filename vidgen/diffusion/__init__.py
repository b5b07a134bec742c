"""Image diffusion: EDM/EDM2 models, samplers with CFG / autoguidance / guidance interval,
post-hoc EMA, noise-range experts and the 2-D autoguidance toy (docs/DIFFUSION.md)."""
