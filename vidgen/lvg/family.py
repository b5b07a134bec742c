"""The long-video GAN as a renderable family: windowed generators over checkpoints.

- :class:`LowResVideo`: the low-res generator's video of ``frames`` frames, rendered window by
  window; each window equals the same frames of a one-shot render (docs/METHODS.md 1.6).
- :class:`SuperResVideo`: low-res frames of the window plus ``context`` frames on each side,
  super-resolved with one z per video (docs/METHODS.md 1.4, inference).
- :func:`load_generator` builds either from checkpoints (a run folder or a checkpoint
  folder), through the one checkpoint-to-network loader
  (:func:`vidgen.train.checkpoint.load_network`).
- :func:`open_lowres`: the :class:`vidgen.registry.Sampler` of a low-res checkpoint
  (``vidgen eval --fake RUN`` and other family-agnostic readers).

Both generators follow :class:`vidgen.render.stream.VideoGenerator`, so
:func:`vidgen.render.stream.render_to_file` streams them to a file in bounded memory.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from vidgen.config import config_from_dict
from vidgen.errors import VidgenError
from vidgen.render.stream import VideoGenerator, stream_frames
from vidgen.train.checkpoint import Checkpoint, load_network, read_checkpoint


class LowResVideo:
    """Windowed renderer over a :class:`vidgen.lvg.lowres.LowResGenerator` (eval mode).

    ``frames``: the length of the video (its temporal levels are sized by it, as in the
    reference implementation); windows may reach a few frames beyond [0, frames) (the margin
    of the last level), which the super-res generator uses as context."""

    def __init__(self, G: torch.nn.Module, frames: int):
        self.G = G.eval().requires_grad_(False)
        self.frames = frames
        self.frame_size = (G.height, G.width)

    @torch.no_grad()
    def render(self, seed: int, start: int, stop: int) -> torch.Tensor:
        # [C, T, H, W] in [-1, 1]
        return self.G.render_seeds([seed], self.frames, start, stop)[0].clamp(-1, 1)


class SuperResVideo:
    """Low-res windows with ``context`` frames each side -> super-res generator windows."""

    def __init__(self, lowres: VideoGenerator, G: torch.nn.Module, segment: int = 16):
        self.lowres, self.G, self.segment = lowres, G.eval().requires_grad_(False), segment
        self.context = G.cfg.context
        self.frame_size = tuple(G.cfg.highres)

    @torch.no_grad()
    def render_both(self, seed: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(high-res [C, T, H, W], low-res [C, T, h, w]) of frames [start, stop)."""
        K = self.context
        lowres = self.lowres.render(seed, start - K, stop + K)  # [C, T + 2K, h, w]
        highres = self.G.upsample_window(lowres, seed, segment=self.segment)
        return highres.clamp(-1, 1), lowres[:, K:K + stop - start]

    def render(self, seed: int, start: int, stop: int) -> torch.Tensor:
        return self.render_both(seed, start, stop)[0]


def build_lowres(config: dict[str, Any]) -> torch.nn.Module:
    from vidgen.lvg.recipe import LowResConfig, build_generator

    return build_generator(config_from_dict(LowResConfig, config))


def build_superres(config: dict[str, Any]) -> torch.nn.Module:
    from vidgen.lvg.recipe_superres import SuperResConfig
    from vidgen.lvg.superres import SuperResGenerator

    return SuperResGenerator(config_from_dict(SuperResConfig, config).model)


def _open(ckpt: Checkpoint | str | os.PathLike, family: str, flag: str) -> Checkpoint:
    c = ckpt if isinstance(ckpt, Checkpoint) else read_checkpoint(ckpt)
    if c.family != family:
        raise VidgenError(f"{c.path} is a {c.family!r} checkpoint; {flag} needs an {family} one")
    return c


def load_generator(lowres_ckpt: str | os.PathLike | Checkpoint, superres_ckpt: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu", frames: int = 300) -> VideoGenerator:
    """A windowed generator of ``frames``-frame videos from a low-res checkpoint (run folder or
    checkpoint folder; the EMA generator if there is one), optionally followed by a super-res
    checkpoint."""
    low = _open(lowres_ckpt, "lvg-lowres", "--lowres")
    gen: VideoGenerator = LowResVideo(load_network(low, ("G_ema", "G"), build_lowres, device), frames)
    if superres_ckpt is not None:
        sr = _open(superres_ckpt, "lvg-superres", "--superres")
        G_sr = load_network(sr, ("G_ema", "G"), build_superres, device)
        if tuple(G_sr.cfg.lowres) != gen.frame_size:
            raise VidgenError(f"{superres_ckpt} expects {G_sr.cfg.lowres[0]}x{G_sr.cfg.lowres[1]} low-res frames; "
                              f"{low.path} makes {gen.frame_size[0]}x{gen.frame_size[1]}")
        gen = SuperResVideo(gen, G_sr)
    return gen


class _Sampler:
    """:class:`vidgen.registry.Sampler` over a windowed generator: generate(seed, n) is the
    n-frame video of ``seed`` (uint8 [n, H, W, 3])."""

    kind = "video"

    def __init__(self, make, step: int):
        self.make, self.step = make, step
        self.frame_size = make(1).frame_size

    def generate(self, seed: int, n: int):
        import numpy as np

        return np.concatenate(list(stream_frames(self.make(n), seed, n, window=64)))

    __call__ = generate


def open_lowres(ckpt: Checkpoint | str | os.PathLike, device: str | torch.device = "cpu") -> _Sampler:
    c = _open(ckpt, "lvg-lowres", "a low-res sampler")
    G = load_network(c, ("G_ema", "G"), build_lowres, device)
    return _Sampler(lambda n: LowResVideo(G, n), c.step)

