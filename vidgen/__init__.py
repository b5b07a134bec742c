"""vidgen: video and time-lapse generation (long-video GAN, time-lapse GAN, EDM/EDM2 diffusion)."""

__version__ = "0.1.0"
