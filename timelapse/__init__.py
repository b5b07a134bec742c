"""Time-lapse GAN: an image generator conditioned on capture time (docs/METHODS.md section 2)."""

from vidgen.registry import Family, register

register(Family(name="timelapse", recipe="timelapse.recipe:TimelapseRecipe",
                sampler="timelapse.family:open_sampler", importer="timelapse.importer:IMPORTER", kind="image",
                summary="time-lapse GAN conditioned on capture time", group="timelapse"))
