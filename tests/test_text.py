"""Text encoders (vidgen/nn/text.py): CLIP's text tower on open_clip, the hashed-words encoder,
weight files with SHA-256 checks, and the error without the `text` extra."""

from __future__ import annotations

import hashlib
import sys

import pytest
import torch
import torch.nn.functional as F

from vidgen.errors import ConfigError, VidgenError
from vidgen.nn import text as T
from vidgen.nn.weights import read_state_dict
from vidgen.optional import available

needs_open_clip = pytest.mark.skipif(not available("open_clip"), reason="open_clip (the text extra) is not installed")

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red circle on a blue background", "a blue circle on a red background",
           "a green square on a yellow background", "a yellow triangle on a green background"]
TINY = T.TextEncoderConfig(kind="clip", arch="custom", pretrained=False, seed=3,
                           custom=T.ClipArch(embed_dim=32, width=32, heads=2, layers=2))


@needs_open_clip
def test_tiny_clip_from_config_dict_matches_open_clip():
    enc = T.build_text_encoder(TINY)
    f = enc.encode(PROMPTS)
    assert f.pooled.shape == (4, 32) and f.tokens.shape == (4, 77, 32) and f.mask.shape == (4, 77)
    assert torch.allclose(f.pooled.norm(dim=-1), torch.ones(4), atol=1e-5)
    # the pooled feature is open_clip's own encode_text of the same model, normalised
    ref = F.normalize(enc.model.encode_text(enc.tokenize(PROMPTS)), dim=-1)
    assert torch.allclose(f.pooled, ref, atol=1e-5)
    # the mask covers SOT .. EOT: "a red circle on a blue background" is 7 BPE tokens + 2
    assert f.mask[0].sum() == 9
    # different prompts give different embeddings (the compared quantity varies)
    cos = f.pooled @ f.pooled.t()
    assert cos[~torch.eye(4, dtype=torch.bool)].max() < 0.999
    # the same seed builds the same weights; another seed other weights
    again = T.build_text_encoder(TINY).encode(PROMPTS).pooled
    other = T.build_text_encoder(T.TextEncoderConfig(**{**TINY.__dict__, "seed": 4})).encode(PROMPTS).pooled
    assert torch.equal(again, f.pooled) and not torch.allclose(other, f.pooled, atol=1e-3)
    assert not any(p.requires_grad for p in enc.parameters())


@needs_open_clip
def test_clip_token_positions_and_vocabulary_check():
    enc = T.build_text_encoder(TINY)
    ids = enc.tokenize(["a red circle and a blue square"])[0]
    pos = enc.token_positions("a red circle and a blue square", "blue square")
    assert pos == [6, 7]
    sub = enc.tokenize(["blue square"])[0, 1:3]
    assert torch.equal(ids[pos], sub)
    with pytest.raises(ConfigError, match="not a part of the prompt"):
        enc.token_positions("a red circle", "green")
    small = T.build_text_encoder(T.TextEncoderConfig(**{**TINY.__dict__, "custom": T.ClipArch(
        embed_dim=32, width=32, heads=2, layers=2, vocab_size=1000)}))
    with pytest.raises(ConfigError, match="vocabulary of 1000"):
        small.encode(["a red circle"])


@needs_open_clip
def test_vit_l14_text_tower_size_on_meta():
    enc = T.build_text_encoder(T.TextEncoderConfig(), device="meta")
    assert sum(p.numel() for p in enc.parameters()) == 123_650_305  # paper_shapes.json: G_full - outside CLIP
    assert enc.dim == 768 and enc.token_dim == 768


def test_words_encoder():
    enc = T.build_text_encoder(T.TextEncoderConfig(kind="words", dim=48, seed=1))
    assert list(enc.parameters()) == []
    f = enc.encode(PROMPTS + ["A  RED circle, on a blue background!"])
    assert f.pooled.shape == (5, 48) and torch.allclose(f.pooled.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(f.pooled[0], f.pooled[4])  # case and punctuation do not matter
    cos = f.pooled[:4] @ f.pooled[:4].t()
    assert cos[~torch.eye(4, dtype=torch.bool)].max() < 0.95  # swapped colours are told apart (word pairs)
    assert f.mask.sum(1).tolist()[:2] == [7, 7]
    again = T.WordsEncoder(48, seed=1).encode(PROMPTS).pooled
    assert torch.equal(again, f.pooled[:4])
    assert not torch.allclose(T.WordsEncoder(48, seed=2).encode(PROMPTS).pooled, again)
    assert enc.token_positions("a red circle and a blue square", "Blue square") == [5, 6]
    with pytest.raises(ConfigError):
        enc.token_positions("a red circle", "square")


def test_missing_and_wrong_weight_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    cfg = T.TextEncoderConfig()
    with pytest.raises(VidgenError) as err:
        T.resolve_clip_weights(cfg)
    msg = str(err.value)
    spec = T.CLIP_WEIGHTS["ViT-L-14"]
    assert spec.filename in msg and spec.sha256 in msg and spec.url in msg
    assert str(tmp_path / "cache" / "detectors" / "ViT-L-14.pt") in msg and "text.weights" in msg
    wrong = tmp_path / "ViT-L-14.pt"
    wrong.write_bytes(b"not clip")
    with pytest.raises(VidgenError, match="has SHA-256"):
        T.resolve_clip_weights(T.TextEncoderConfig(weights=str(wrong)))


@needs_open_clip
def test_pretrained_weights_load_from_a_verified_file(tmp_path, monkeypatch):
    """A CLIP state dict in the OpenAI layout (as the release's TorchScript holds it), checked
    by digest, loaded into the text tower; the image tower's entries are skipped."""
    src = T.build_text_encoder(TINY, keep_image_tower=True)
    state = {k: v.half() for k, v in src.model.state_dict().items()}  # the release is fp16
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "tiny-clip.pt"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(T.CLIP_WEIGHTS, "custom", T.WeightFile("tiny-clip.pt", digest, "https://example.org/tiny"))
    cfg = T.TextEncoderConfig(**{**TINY.__dict__, "pretrained": True, "weights": str(path), "seed": 99})
    enc = T.build_text_encoder(cfg)
    ref = {k: v for k, v in src.model.state_dict().items() if not k.startswith("visual")}
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, ref[k].half().float()), k
    assert set(read_state_dict(path)) == set(state)


def test_without_the_text_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip now fails
    with pytest.raises(VidgenError, match=r"vidgen\[text\]"):
        T.build_text_encoder(TINY)
    # the words encoder needs nothing
    assert T.build_text_encoder(T.TextEncoderConfig(kind="words")).encode(["a cat"]).pooled.shape == (1, 64)
