"""Time-lapse GAN: an image generator conditioned on capture time (METHODS.md section 2)."""
