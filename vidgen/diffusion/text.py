"""Text conditioning of EDM2 nets (docs/DIFFUSION.md, "Text and paint-with-words").

A net with ``model.token_dim > 0`` cross-attends to the per-token features of a text encoder
(vidgen/nn/text.py, the ``text`` section of the config). ``data.captions: true`` trains it on
captioned images (vidgen/data/captions.py); sampling takes a prompt, and paint-with-words
regions: a grey-scale image per phrase of the prompt (white = painted), which bias the
cross-attention of that phrase's tokens towards the painted pixels (eDiff-I; docs/METHODS.md 7,
:class:`vidgen.diffusion.experts.PaintWithWords`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidgen.data.captions import CaptionedImages
from vidgen.diffusion.experts import PaintWithWords
from vidgen.errors import ConfigError, VidgenError
from vidgen.nn.text import TextEncoder, build_text_encoder


class CaptionItems(torch.utils.data.Dataset):
    """Captioned images as {"x": [3, R, R] in [-1, 1], "caption": index into ``texts``}."""

    def __init__(self, path: str, resolution: int, xflip: bool = False):
        self.base = CaptionedImages(path, resolution, xflip)
        self.texts = self.base.texts

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        return {"x": item["img"], "caption": item["caption"]}


def text_encoder(cfg, device) -> TextEncoder:
    """The frozen encoder of a text-conditioned run (``cfg``: a DiffusionConfig), checked
    against the net's ``model.token_dim``."""
    enc = build_text_encoder(cfg.text, device)
    if cfg.model.token_dim != enc.token_dim:
        raise ConfigError(f"model.token_dim is {cfg.model.token_dim}, the text encoder's tokens have "
                          f"{enc.token_dim} channels; set model.token_dim: {enc.token_dim}")
    return enc


def prompt_tokens(encoder: TextEncoder, prompts: list[str]) -> torch.Tensor:
    """Per-token features [B, T, token_dim] of ``prompts`` (what the net cross-attends to)."""
    with torch.no_grad():
        return encoder.encode(list(prompts)).tokens


def parse_region(text: str) -> tuple[Path, str]:
    """``"masks/a.png=red circle"`` -> (path, phrase)."""
    path, sep, phrase = text.partition("=")
    if not sep or not path.strip() or not phrase.strip():
        raise VidgenError(f"--region {text!r}: give IMAGE=PHRASE, e.g. masks/left.png=\"red circle\"")
    return Path(path.strip()), phrase.strip()


def load_region(path: Path) -> torch.Tensor:
    """A painted region from an image file: float [H, W] in [0, 1] (its luminance; white =
    painted). Any size: it is resized to each attention layer's."""
    from vidgen.data.images import decode_image, read_file
    if not path.is_file():
        raise VidgenError(f"--region {path}: no such image")
    rgb = decode_image(read_file(path), str(path)).astype(np.float32) / 255.0
    return torch.from_numpy(rgb @ np.array([0.299, 0.587, 0.114], np.float32))


def paint_with_words(encoder: TextEncoder, prompt: str, regions: list[tuple[torch.Tensor, str]],
                     weight: float = 1.0) -> PaintWithWords:
    """Masks [1, T, H, W] for ``prompt``'s tokens: each region painted on the tokens of its
    phrase (a ConfigError names a phrase that is not in the prompt); unpainted tokens get 0."""
    if not regions:
        raise VidgenError("paint-with-words needs at least one region")
    size = regions[0][0].shape
    if any(m.shape != size for m, _ in regions):
        raise VidgenError(f"--region images must share one size; got {sorted({tuple(m.shape) for m, _ in regions})}")
    T = prompt_tokens(encoder, [prompt]).shape[1]
    masks = torch.zeros(1, T, *size)
    for mask, phrase in regions:
        for t in encoder.token_positions(prompt, phrase):
            masks[0, t] = torch.maximum(masks[0, t], mask.float())
    return PaintWithWords(masks, weight)
