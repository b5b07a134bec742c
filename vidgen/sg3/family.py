"""A trained (or imported) sg3 generator as the registry's image :class:`Sampler`.

``generate(seed, n)`` returns the images of seeds seed .. seed + n - 1 (z drawn as StyleGAN's
gen_images.py draws it, so a seed names the same image as in the reference code); a
conditional generator gives seed s the class ``s mod c_dim`` unless a class is fixed.
``render(seeds, transform)`` is the float interface the equivariance metrics call.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from vidgen.config import config_from_dict
from vidgen.errors import VidgenError
from vidgen.render.writer import to_uint8_frames
from vidgen.sg3.networks import Generator
from vidgen.sg3.recipe import SG3Config, seed_latents
from vidgen.train.checkpoint import Checkpoint, load_network, read_checkpoint


def load_generator(checkpoint: Checkpoint | str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator (else G) of an sg3 run folder or checkpoint, in eval mode."""
    c = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)
    if c.family != "sg3":
        raise VidgenError(f"{c.path} is a {c.family!r} checkpoint; expected an sg3 run")
    G = load_network(c, ("G_ema", "G"), lambda config: Generator(config_from_dict(SG3Config, config).model), device)
    return G.eval().requires_grad_(False)


class SG3Sampler:
    kind = "image"

    def __init__(self, G: Generator, psi: float = 1.0, class_index: int | None = None, batch: int = 8):
        cfg = G.cfg
        if class_index is not None and cfg.c_dim == 0:
            raise VidgenError("this generator is unconditional; leave out the class")
        if class_index is not None and not 0 <= class_index < cfg.c_dim:
            raise VidgenError(f"class {class_index} is out of range: this generator has {cfg.c_dim} classes "
                              f"(0..{cfg.c_dim - 1})")
        self.G, self.psi, self.class_index, self.batch = G, psi, class_index, batch
        self.frame_size = (cfg.resolution, cfg.resolution)
        self.device = G.mapping.w_avg.device
        # how the images were drawn, for reports
        self.info = {"psi": psi, "z": "numpy RandomState(seed).randn(z_dim)",
                     "class": ("none" if cfg.c_dim == 0 else class_index if class_index is not None
                               else f"seed mod {cfg.c_dim}")}

    def labels(self, seeds: list[int]) -> torch.Tensor | None:
        if self.G.cfg.c_dim == 0:
            return None
        cls = [self.class_index if self.class_index is not None else s % self.G.cfg.c_dim for s in seeds]
        return self.G.labels(torch.tensor(cls), len(seeds))

    def ws(self, seeds: list[int]) -> torch.Tensor:
        z = seed_latents(seeds, self.G.cfg.z_dim).to(self.device)
        return self.G.mapping(z, self.labels(seeds), psi=self.psi)

    @torch.no_grad()
    def render(self, seeds, transform: torch.Tensor | None = None) -> torch.Tensor:
        """float images [len(seeds), 3, H, W] (about [-1, 1]); ``transform``: [3, 3] inverse
        transform of the Fourier input (None: the generator's own, the identity by default)."""
        seeds = [int(s) for s in seeds]
        out = []
        for i in range(0, len(seeds), self.batch):
            part = seeds[i:i + self.batch]
            t = None if transform is None else torch.as_tensor(transform, dtype=torch.float32, device=self.device)
            out.append(self.G.synthesis(self.ws(part), transform=t).float().cpu())
        return torch.cat(out)

    def generate(self, seed: int, n: int) -> np.ndarray:
        """uint8 [n, H, W, 3]: the images of seeds seed .. seed + n - 1."""
        return to_uint8_frames(self.render(range(seed, seed + n)).clamp(-1, 1), layout="TCHW")


def open_sampler(checkpoint: Checkpoint | str | os.PathLike, device: str | torch.device = "cpu") -> SG3Sampler:
    """The registry's entry point: (checkpoint, device) -> Sampler."""
    return SG3Sampler(load_generator(checkpoint, device))
