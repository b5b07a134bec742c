"""CLIP-FD: the Frechet distance of CLIP image-tower embeddings, with a tiny open_clip model
built from a config dict and a SHA-256-checked weight file."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.optional import available, require

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not available("open_clip"), reason="open_clip (the text extra) is not installed")]

TINY = dict(embed_dim=16, vision_cfg=dict(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
            text_cfg=dict(context_length=8, vocab_size=100, width=32, heads=2, layers=1))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from safetensors.torch import save_file

    open_clip = require("open_clip", "text")

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), model


def _images(n, tint, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(60, 190, (n, 40, 56, 3))
    x[..., 0] += tint
    return np.clip(x, 0, 255).astype(np.uint8)


def test_clip_detector_embeds_with_the_towers_preprocessing(tiny_clip):
    from vidgen.metrics.detectors import clip_from_config
    from vidgen.metrics.preprocess import clip_input

    path, sha, model = tiny_clip
    det = clip_from_config(TINY, path, sha)
    assert det.name == "clip" and det.feature_dim == 16 and det.sha256 == sha
    x = torch.from_numpy(_images(3, 0, 0)).permute(0, 3, 1, 2).contiguous()
    want = model.eval().encode_image(clip_input(x, 32, det.mean, det.std))
    out = det(x)
    assert torch.allclose(out, want, atol=1e-5) and float(out.std(0).mean()) > 1e-3
    with pytest.raises(VidgenError, match="SHA-256"):
        clip_from_config(TINY, path, "0" * 64)


def test_clip_fd_metric_through_evaluate(tiny_clip, tmp_path):
    from vidgen.metrics.detectors import clip_from_config
    from vidgen.metrics.evaluate import EvalOptions, evaluate
    from vidgen.metrics.inputs import ArrayVideo, FakeVideos, RealVideos

    det = clip_from_config(TINY, tiny_clip[0], tiny_clip[1])
    real = RealVideos([ArrayVideo(_images(30, 0, 1))], "r")

    def far(seed, n):
        return _images(n, 60, seed + 100)

    def near(seed, n):
        return _images(n, 0, seed + 100)

    values = {}
    for name, gen in (("far", far), ("near", near)):
        rep = evaluate(real, FakeVideos("callable", name, generate=gen, content="image"),
                       EvalOptions(["clip_fd_30"], detectors={"clip": det}, stats_dir=tmp_path, progress=False))
        e = rep["metrics"]["clip_fd_30"]
        assert e["detector"] == {"name": "clip", "sha256": tiny_clip[1]} and e["num_fake"] == [30]
        values[name] = e["value"]
    assert values["far"] > 2 * values["near"] > 0


def test_clip_needs_open_clip_and_its_file(tmp_path, monkeypatch):
    from vidgen.metrics.detectors import WEIGHTS, load_detector

    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path))
    with pytest.raises(VidgenError) as err:
        load_detector("clip")
    assert WEIGHTS["clip"].filename in str(err.value) and WEIGHTS["clip"].sha256 in str(err.value)
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if the extra were not installed
    with pytest.raises(VidgenError, match=r"vidgen\[text\]"):
        load_detector("clip")
