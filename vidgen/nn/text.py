"""Text encoders for text-conditioned generators (StyleGAN-T, docs/STYLEGAN_T.md; the
cross-attention of text-conditioned EDM2 nets, docs/DIFFUSION.md).

Two kinds, one interface (:class:`TextEncoder`): ``encode(texts)`` returns the pooled,
unit-norm embedding of each text (``[B, dim]``, the conditioning vector of StyleGAN-T) and
its per-token features (``[B, T, token_dim]`` with a mask, what cross-attention reads).

- ``kind: clip``: the text tower of an open_clip CLIP (the extra ``vidgen[text]``). The BPE
  tokenizer ships inside open_clip and works offline. StyleGAN-T uses CLIP ViT-L/14 with the
  OpenAI weights (QuickGELU): they come from a local file checked against its published
  SHA-256 (``$VIDGEN_CACHE/detectors/ViT-L-14.pt``, the file the ``clip`` detector of
  ``vidgen eval`` reads; nothing is downloaded). ``pretrained: false`` gives the same
  architecture with seeded random weights (tests, the CPU benchmark); ``arch: custom`` builds
  the tower from the fields of ``custom`` (e.g. a tiny one).
- ``kind: words``: no dependency and no parameters. Every lower-case word and every pair of
  neighbouring words maps to a fixed Gaussian vector drawn from a seed derived from the
  SHA-256 of the text of the word (or pair); the pooled embedding is the normalised sum of
  the vectors of a text (the pairs keep "red circle on blue" apart from "blue circle on
  red"), the tokens are the word vectors plus a sinusoidal position code (a padding vector
  after the last word). For CPU-sized runs and benchmarks when no CLIP weights are at hand.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.errors import ConfigError, VidgenError
from vidgen.nn.weights import WeightFile, read_state_dict, verified_file
from vidgen.optional import require


@dataclass
class ClipArch:
    """The text tower of a custom open_clip CLIP (``arch: custom``)."""

    embed_dim: int = 64  # size of the pooled (projected) embedding
    width: int = 64
    heads: int = 2
    layers: int = 2
    vocab_size: int = 49408  # the open_clip BPE vocabulary; smaller ones cannot encode strings
    context_length: int = 77
    quick_gelu: bool = True  # as the OpenAI CLIP builds


@dataclass
class TextEncoderConfig:
    """The ``text`` section of a text-conditioned family's config."""

    kind: Literal["clip", "words"] = "clip"
    arch: str = "ViT-L-14"  # open_clip architecture name, or "custom" (the fields of `custom`)
    custom: ClipArch = field(default_factory=ClipArch)
    pretrained: bool = True  # load the published weights (clip); False: seeded random weights
    weights: str = ""  # weight file; "" = $VIDGEN_CACHE/detectors/<published file name>
    seed: int = 0  # random weights (pretrained: false) and the word vectors (kind words)
    dim: int = 64  # kind words: size of the word vectors


# The OpenAI release of CLIP ViT-L/14 (the digest is part of its official URL). The same file
# serves the `clip` detector of the metrics (vidgen/metrics/detectors.py).
CLIP_WEIGHTS: dict[str, WeightFile] = {
    "ViT-L-14": WeightFile(
        "ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        "https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"),
}


class TextFeatures(NamedTuple):
    pooled: torch.Tensor  # [B, dim], unit norm
    tokens: torch.Tensor  # [B, T, token_dim]
    mask: torch.Tensor  # [B, T] bool, True where a token of the text is


# --- the encoders ----------------------------------------------------------------------------
class TextEncoder(nn.Module):
    """Base class: ``encode(texts) -> TextFeatures``; ``forward(texts)`` is the pooled part."""

    dim: int = 0  # size of the pooled embedding
    token_dim: int = 0  # size of the per-token features

    def encode(self, texts: list[str]) -> TextFeatures:
        raise NotImplementedError

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode(texts).pooled

    def token_positions(self, text: str, phrase: str) -> list[int]:
        """Token indices of ``phrase`` inside ``text`` (its first occurrence), for per-token
        controls such as paint-with-words; ConfigError when it is not there."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")


def _open_clip_model_config(cfg: TextEncoderConfig) -> dict:
    if cfg.arch == "custom":
        a = cfg.custom
        return {"embed_dim": a.embed_dim, "quick_gelu": a.quick_gelu,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                "text_cfg": {"context_length": a.context_length, "vocab_size": a.vocab_size, "width": a.width,
                             "heads": a.heads, "layers": a.layers}}
    open_clip = require("open_clip", "text", "the CLIP text encoder")
    model_cfg = open_clip.get_model_config(cfg.arch)
    if model_cfg is None:
        raise ConfigError(f"text.arch: open_clip has no architecture {cfg.arch!r} (e.g. ViT-L-14, ViT-B-32, custom)")
    # The OpenAI weights were trained with QuickGELU (open_clip builds them with it).
    return {**model_cfg, "quick_gelu": True}


class ClipTextEncoder(TextEncoder):
    """The text tower of an open_clip CLIP, frozen (``model``: the CLIP without its image tower,
    unless ``keep_image_tower``). Pooled: the projected EOT feature, normalised; tokens: the
    final-layer-norm features of every position (width of the tower)."""

    def __init__(self, model_cfg: dict, keep_image_tower: bool = False):
        super().__init__()
        open_clip = require("open_clip", "text", "the CLIP text encoder")
        self.model_cfg = model_cfg
        self.model = open_clip.model.CLIP(**model_cfg)
        if not keep_image_tower:
            del self.model.visual
        self.model.eval().requires_grad_(False)
        self.dim = int(model_cfg["embed_dim"])
        self.token_dim = int(model_cfg["text_cfg"]["width"])
        self.context_length = int(self.model.context_length)
        self.vocab_size = int(self.model.vocab_size)
        self._tokenizer = open_clip.get_tokenizer("ViT-L-14", context_length=self.context_length)

    def train(self, mode: bool = True):  # frozen: stays in eval mode
        return super().train(False)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """texts -> token ids [B, context_length] (BPE of open_clip; SOT ... EOT, zero-padded)."""
        ids = self._tokenizer(list(texts))
        if int(ids.max()) >= self.vocab_size:
            raise ConfigError(f"this CLIP text tower has a vocabulary of {self.vocab_size} tokens; the open_clip "
                              "tokenizer needs 49408, so this model takes text embeddings only, not prompts")
        return ids.to(self.device)

    def encode(self, texts: list[str]) -> TextFeatures:
        ids = self.tokenize(texts)
        m = self.model
        x = m.token_embedding(ids) + m.positional_embedding  # [B, T, W]
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        eot = ids.argmax(dim=-1)  # the end-of-text token has the largest id
        pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ m.text_projection
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot[:, None]
        return TextFeatures(F.normalize(pooled, dim=-1), x, mask)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] in [0, 1] at the tower's size -> unit-norm embeddings [B, dim]
        (CLIP normalisation applied here)."""
        mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=images.device, dtype=images.dtype)
        std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=images.device, dtype=images.dtype)
        x = (images - mean[:, None, None]) / std[:, None, None]
        return F.normalize(self.model.encode_image(x), dim=-1)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def token_positions(self, text: str, phrase: str) -> list[int]:
        ids = self._tokenizer([text])[0].tolist()
        sub = list(self._tokenizer.encode(phrase))  # BPE ids without start / end tokens
        for i in range(1, len(ids) - len(sub) + 1):
            if sub and ids[i:i + len(sub)] == sub:
                return list(range(i, i + len(sub)))
        raise ConfigError(f"{phrase!r} is not a part of the prompt {text!r}")


_WORD = re.compile(r"[a-z0-9]+")


def words_of(text: str) -> list[str]:
    """Lower-case words of a text (letters and digits)."""
    return _WORD.findall(text.lower())


class WordsEncoder(TextEncoder):
    """Hashed word and word-pair vectors (see the module docstring); no parameters."""

    def __init__(self, dim: int = 64, seed: int = 0, max_words: int = 32):
        super().__init__()
        self.dim = self.token_dim = dim
        self.seed, self.max_words = seed, max_words
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(device)
        self._cache: dict[str, torch.Tensor] = {}

    def vector(self, key: str) -> torch.Tensor:
        """The fixed N(0, I) vector of a word or word pair ``key`` ([dim], float32, CPU)."""
        v = self._cache.get(key)
        if v is None:
            digest = hashlib.sha256(f"{self.seed}\x00{key}".encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))
            v = self._cache[key] = torch.randn(self.dim, generator=g)
        return v

    def _position_code(self, n: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(100.0) * torch.arange(0, self.dim, 2, dtype=torch.float32) / self.dim)
        code = torch.zeros(n, self.dim)
        code[:, 0::2] = torch.sin(pos * freq)
        code[:, 1::2] = torch.cos(pos * freq)[:, : self.dim // 2]
        return code

    def encode(self, texts: list[str]) -> TextFeatures:
        dev = self._anchor.device
        B, T = len(texts), self.max_words
        pooled = torch.zeros(B, self.dim)
        tokens = torch.zeros(B, T, self.dim)
        mask = torch.zeros(B, T, dtype=torch.bool)
        pos = self._position_code(T)
        for b, text in enumerate(texts):
            words = words_of(text)[:T]
            keys = words + [f"{a} {c}" for a, c in zip(words[:-1], words[1:])]
            pooled[b] = torch.stack([self.vector(k) for k in keys]).sum(0) if keys else self.vector("")
            # positions after the text hold a padding vector (as CLIP's positions after its end token)
            tokens[b] = torch.stack([self.vector(w) for w in words] + [self.vector("<pad>")] * (T - len(words))) + pos
            mask[b, :len(words)] = True
        return TextFeatures(F.normalize(pooled, dim=-1).to(dev), tokens.to(dev), mask.to(dev))

    def token_positions(self, text: str, phrase: str) -> list[int]:
        words, sub = words_of(text)[: self.max_words], words_of(phrase)
        for i in range(len(words) - len(sub) + 1):
            if sub and words[i:i + len(sub)] == sub:
                return list(range(i, i + len(sub)))
        raise ConfigError(f"{phrase!r} is not a part of the prompt {text!r}")


def build_text_encoder(cfg: TextEncoderConfig, device: str | torch.device | None = None,
                       keep_image_tower: bool = False, load_weights: bool = True) -> TextEncoder:
    """The encoder of ``cfg``, frozen. ``device="meta"`` builds it without memory and without
    reading weights (parameter counts); ``load_weights=False`` leaves the constructed values
    (e.g. when a checkpoint's state dict is loaded right after)."""
    if cfg.kind == "words":
        return WordsEncoder(cfg.dim, cfg.seed).to(device or "cpu")
    model_cfg = _open_clip_model_config(cfg)
    meta = device is not None and torch.device(device).type == "meta"
    if meta:
        with torch.device("meta"):
            return ClipTextEncoder(model_cfg, keep_image_tower)
    if cfg.pretrained and load_weights:
        file = resolve_clip_weights(cfg)  # before building: a missing file fails fast
        enc = ClipTextEncoder(model_cfg, keep_image_tower)
        load_openai_state(enc, read_state_dict(file), str(file))
    else:
        with torch.random.fork_rng(devices=[]):  # seeded random weights; the caller's RNG is untouched
            torch.manual_seed(cfg.seed)
            enc = ClipTextEncoder(model_cfg, keep_image_tower)
    return enc.to(device or "cpu")


def resolve_clip_weights(cfg: TextEncoderConfig) -> Path:
    if cfg.arch not in CLIP_WEIGHTS:
        raise ConfigError(f"text.arch: no published weights are known for {cfg.arch!r} (known: "
                          f"{', '.join(CLIP_WEIGHTS)}); set text.pretrained=false for random weights")
    return verified_file(CLIP_WEIGHTS[cfg.arch], cfg.weights or None, f"CLIP {cfg.arch} text encoder",
                         key="text.weights")[0]


def load_openai_state(enc: ClipTextEncoder, state: dict[str, torch.Tensor], where: str) -> None:
    """Load an OpenAI-layout CLIP state dict (the names open_clip's CLIP uses, plus three
    integer entries) into ``enc.model``; the image tower's entries are skipped when it was
    dropped. Half-precision releases are cast to the model's dtype."""
    own = enc.model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise VidgenError(f"{where} is not a CLIP checkpoint of this architecture (missing {missing[:3]})")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise VidgenError(f"{where}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected "
                          f"{tuple(own[bad[0]].shape)} (another CLIP architecture?)")
    enc.model.load_state_dict({k: state[k].to(own[k].dtype) for k in own})
