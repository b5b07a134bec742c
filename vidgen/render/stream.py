"""Chunked rendering of arbitrarily long videos in bounded memory.

A :class:`VideoGenerator` renders any frame range [start, stop) of the video with a given
seed, without rendering from frame 0, so a long video is produced window by window and each
window goes straight to the writer: memory does not grow with the number of frames.

- :class:`LowResVideo`: the long-video GAN's low-res generator. For every window the temporal
  latent is computed over the window plus the filter margin, and each temporal level over
  the window plus its convolution margin (the generator's absolute time grid makes the
  frames identical to a one-shot render).
- :class:`SuperResVideo`: low-res frames of the window plus 4 frames of context on each side,
  super-resolved with one z per video (METHODS.md 1.4, inference).
- :func:`load_generator` builds either from checkpoints (the family is read from the file).
"""

from __future__ import annotations

import os
from typing import Iterator, Protocol, runtime_checkable

import torch
from tqdm import tqdm

from vidgen.config import config_from_dict
from vidgen.errors import VidgenError
from vidgen.render.writer import open_writer, to_uint8_frames


@runtime_checkable
class VideoGenerator(Protocol):
    """Renders frames [start, stop) of the video ``seed``: float [C, T, H, W] in [-1, 1]."""

    frame_size: tuple[int, int]  # (H, W)

    def render(self, seed: int, start: int, stop: int) -> torch.Tensor: ...


class LowResVideo:
    """Windowed renderer over a :class:`vidgen.lvg.lowres.LowResGenerator` (eval mode)."""

    def __init__(self, G: torch.nn.Module):
        self.G = G.eval().requires_grad_(False)
        self.frame_size = (G.height, G.width)

    @torch.no_grad()
    def render(self, seed: int, start: int, stop: int) -> torch.Tensor:
        # [C, T, H, W]; frames outside [0, N) are defined too (the latent is endless both ways).
        return self.G.render_seeds([seed], start, stop)[0].clamp(-1, 1)


class SuperResVideo:
    """Low-res windows with ``context`` frames each side -> super-res generator windows."""

    def __init__(self, lowres: VideoGenerator, G: torch.nn.Module, segment: int = 16):
        self.lowres, self.G, self.segment = lowres, G.eval().requires_grad_(False), segment
        self.context = G.cfg.context
        self.frame_size = tuple(G.cfg.highres)

    def render_both(self, seed: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(high-res [C, T, H, W], low-res [C, T, h, w]) of frames [start, stop)."""
        K = self.context
        lowres = self.lowres.render(seed, start - K, stop + K)  # [C, T + 2K, h, w]
        highres = self.G.upsample_window(lowres, seed, segment=self.segment)
        return highres.clamp(-1, 1), lowres[:, K:K + stop - start]

    def render(self, seed: int, start: int, stop: int) -> torch.Tensor:
        return self.render_both(seed, start, stop)[0]


def stream_frames(generator: VideoGenerator, seed: int, num_frames: int, window: int = 64,
                  start: int = 0, with_lowres: bool = False) -> Iterator:
    """uint8 [t, H, W, 3] chunks of frames [start, start + num_frames), ``window`` at a time.

    With ``with_lowres`` (super-res generators only) yields (frames, lowres frames) pairs.
    """
    if num_frames < 1 or window < 1:
        raise VidgenError(f"frames ({num_frames}) and window ({window}) must be at least 1")
    if with_lowres and not hasattr(generator, "render_both"):
        raise VidgenError("the low-res frames can only be saved next to a super-res render (pass --superres)")
    for a in range(start, start + num_frames, window):
        b = min(a + window, start + num_frames)
        if with_lowres:
            hi, lo = generator.render_both(seed, a, b)
            yield to_uint8_frames(hi, layout="CTHW"), to_uint8_frames(lo, layout="CTHW")
        else:
            yield to_uint8_frames(generator.render(seed, a, b), layout="CTHW")


def render_to_file(generator: VideoGenerator, seed: int, num_frames: int, out: str | os.PathLike, fps: float = 30.0,
                   window: int = 64, settings: dict | None = None, lowres_out: str | os.PathLike | None = None,
                   start: int = 0, progress: bool = True) -> None:
    """Stream a video to ``out`` (and its low-res frames to ``lowres_out``), settings embedded."""
    settings = dict(settings or {})
    # the bar is closed (its line ended) also when writing fails, so an error message starts a line
    with tqdm(total=num_frames, unit="frame", desc="render", disable=not progress) as bar, \
            open_writer(out, fps, settings) as writer:
        if lowres_out is None:
            for chunk in stream_frames(generator, seed, num_frames, window, start):
                writer.append(chunk)
                bar.update(len(chunk))
        else:
            with open_writer(lowres_out, fps, {**settings, "lowres": True}) as low:
                for chunk, chunk_lo in stream_frames(generator, seed, num_frames, window, start, with_lowres=True):
                    writer.append(chunk)
                    low.append(chunk_lo)
                    bar.update(len(chunk))


def _build_family_generator(ckpt, device: torch.device) -> torch.nn.Module:
    """The EMA generator of a checkpoint, on ``device``, in eval mode."""
    from vidgen.registry import recipe_class
    from vidgen.train.checkpoint import load_state

    recipe_cls = recipe_class(ckpt.family)
    cfg = config_from_dict(recipe_cls.config_class, ckpt.config)
    if ckpt.family == "lvg-lowres":
        from vidgen.lvg.recipe import build_generator

        G = build_generator(cfg)
    elif ckpt.family == "lvg-superres":
        from vidgen.lvg.superres import SuperResGenerator

        G = SuperResGenerator(cfg.model)
    else:
        raise VidgenError(f"{ckpt.path} is a {ckpt.family!r} checkpoint; expected lvg-lowres or lvg-superres")
    name = "G_ema" if "G_ema" in ckpt.network_names else "G"
    load_state(G, ckpt, name)  # names, shapes and finiteness checked
    return G.to(device).eval()


def load_generator(ckpt_path: str | os.PathLike, superres_ckpt: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> VideoGenerator:
    """A windowed generator from a low-res checkpoint (a run folder or a checkpoint folder),
    optionally followed by a super-res checkpoint."""
    from vidgen.train.checkpoint import read_checkpoint

    device = torch.device(device)
    low = read_checkpoint(ckpt_path)
    if low.family != "lvg-lowres":
        raise VidgenError(f"{ckpt_path} is a {low.family!r} checkpoint; --lowres needs an lvg-lowres one")
    gen: VideoGenerator = LowResVideo(_build_family_generator(low, device))
    if superres_ckpt is not None:
        sr = read_checkpoint(superres_ckpt)
        if sr.family != "lvg-superres":
            raise VidgenError(f"{superres_ckpt} is a {sr.family!r} checkpoint; --superres needs an lvg-superres one")
        G_sr = _build_family_generator(sr, device)
        if tuple(G_sr.cfg.lowres) != gen.frame_size:
            raise VidgenError(f"{superres_ckpt} expects {G_sr.cfg.lowres[0]}x{G_sr.cfg.lowres[1]} low-res frames; "
                              f"{ckpt_path} makes {gen.frame_size[0]}x{gen.frame_size[1]}")
        gen = SuperResVideo(gen, G_sr)
    return gen

