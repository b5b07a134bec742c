"""StyleGAN-T end to end: captioned data (folder, JSONL, prepared), the shapes sample,
`vidgen train stylegan-t`, `vidgen t2i`, the eval sampler, and what works without the
`text` extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main
from vidgen.data.captions import CaptionedImages
from vidgen.data.synthetic import SHAPE_COLORS, make_shapes
from vidgen.errors import DataError
from vidgen.optional import available

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

# a StyleGAN-T small enough for a test: 16x16, words text encoder, a 2-block random ViT in D
TINY = ["--config", "configs/stylegan-t/tiny.yaml", "--set", "data.resolution=16", "--set", "G.img_resolution=16",
        "--set", "G.channel_base=256", "--set", "G.channel_max=16", "--set", "G.gn_groups=4", "--set", "text.dim=16",
        "--set", "D.dino.embed_dim=16", "--set", "D.dino.depth=2", "--set", "D.dino.hooks=[0,1]",
        "--set", "D.dino.img_size=32", "--set", "engine.batch=4", "--set", "engine.steps=2",
        "--set", "engine.checkpoint_every=2", "--set", "engine.log_every=1", "--set", "D.virtual_batch=2"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "shapes"
    make_shapes(out, seed=0, size=16, count=24, objects=(1, 2))
    return out


def test_shapes_sample_captions_and_labels(shapes):
    rows = [json.loads(line) for line in (shapes / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {len(r["objects"]) for r in rows} == {1, 2}
    for r in rows:
        assert (shapes / r["file"]).with_suffix(".txt").read_text().strip() == r["text"]
        assert r["text"].endswith(f"on a {r['background']} background")
        assert all(o["color"] != r["background"] for o in r["objects"])
        img = np.asarray(Image.open(shapes / r["file"]), dtype=np.float64)
        o = r["objects"][0]  # the centre pixel of the first shape has its colour, the corner the background's
        centre = img[int(o["cy"]), int(o["cx"])]
        assert np.abs(centre - SHAPE_COLORS[o["color"]]).max() < 40
        assert np.abs(img[0, 0] - SHAPE_COLORS[r["background"]]).max() < 40
    assert main(["data", "synth", "shapes", str(shapes.parent / "cli"), "--count", "3"]) == 0
    assert len(list((shapes.parent / "cli").glob("*.txt"))) == 3
    assert Image.open(shapes.parent / "cli" / "shape_00000.png").size == (32, 32)


def test_captioned_layouts(shapes, tmp_path):
    ds = CaptionedImages(shapes, 16)
    assert len(ds) == 24 and ds.caption(0) == (shapes / "shape_00000.txt").read_text().strip()
    item = ds[3]
    assert item["img"].shape == (3, 16, 16) and -1 <= item["img"].min() and item["img"].max() <= 1
    assert ds.texts[item["caption"]] == ds.caption(3)
    # JSONL with paths relative to its folder
    lines = [json.dumps({"file": f"shapes/shape_{i:05d}.png", "text": f"caption {i % 2}"}) for i in range(4)]
    (shapes.parent / "list.jsonl").write_text("\n".join(lines))
    js = CaptionedImages(shapes.parent / "list.jsonl", 8)
    assert len(js) == 4 and js.texts == ["caption 0", "caption 1"] and js[1]["img"].shape == (3, 8, 8)
    assert torch.allclose(js.image(0), CaptionedImages(shapes, 8).image(0))
    (tmp_path / "bad.jsonl").write_text('{"file": "nope.png", "text": "x"}\n')
    with pytest.raises(DataError, match="nope.png"):
        CaptionedImages(tmp_path / "bad.jsonl", 8)
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "a.png")
    with pytest.raises(DataError, match="no captioned image"):
        CaptionedImages(tmp_path / "empty", 8)


def test_prepared_dataset_captions(shapes, tmp_path):
    src = tmp_path / "src"
    make_shapes(src, seed=1, size=16, count=5)
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "prep"), "--resolution", "16x16"]) == 0
    ds = CaptionedImages(tmp_path / "prep", 16)  # captions from the .txt beside the sources
    assert [ds.caption(i) for i in range(5)] == [(src / f"shape_{i:05d}.txt").read_text().strip() for i in range(5)]
    assert (ds.image(2) - CaptionedImages(src, 16).image(2)).abs().mean() < 0.05  # JPEG shards
    manifest = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    clip = manifest["clips"][0]["id"]
    (tmp_path / "prep" / "captions.jsonl").write_text(
        "\n".join(json.dumps({"clip": clip, "frame": j, "text": f"frame {j}"}) for j in range(0, 5, 2)))
    ds = CaptionedImages(tmp_path / "prep", 16)  # the sidecar wins; uncaptioned frames are left out
    assert len(ds) == 3 and ds.missing == 2 and ds.caption(1) == "frame 2"


@pytest.fixture(scope="module")
def trained(shapes) -> Path:
    """A run of two training steps of the test-sized StyleGAN-T."""
    if not available("timm"):
        pytest.skip("timm (the text extra) is not installed")
    runs = shapes.parent / "runs"
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["train", "stylegan-t", *TINY, "--data", str(shapes), "--out", str(runs)]) == 0
    finally:
        os.chdir(cwd)
    return next(runs.iterdir())


def test_train_t2i_and_sampler(trained, shapes, tmp_path, capsys):
    run = trained
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines() if line.startswith("{")]
    last = stats[-1]["stats"]
    assert np.isfinite(last["D/loss"]) and np.isfinite(last["G/loss"]) and stats[-1]["step"] == 2
    capsys.readouterr()
    out = tmp_path / "grid.png"
    assert main(["t2i", "--net", str(run), "--prompt", "a red circle on a blue background",
                 "--prompt", "a green square on a yellow background", "--psi", "1.0,0.5", "--seeds", "0-2",
                 "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["images"] == 12
    img = np.asarray(Image.open(out))
    assert img.shape == (4 * 16 + 3 * 2, 3 * 16 + 2 * 2, 3)  # rows: prompt x psi, columns: seeds
    assert main(["t2i", "--net", str(run), "--prompt", "a cat", "--seeds", "5", "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "p000-psi1-seed000005.png").is_file()
    assert main(["t2i", "--net", str(run), "--seeds", "0-1", "--out", str(out)]) == 2  # no prompt

    from vidgen import registry
    fam = registry.get("stylegan-t")
    sampler = registry.resolve(fam.sampler)(run, "cpu")
    frames = sampler.generate(10, 3)
    assert frames.shape == (3, 16, 16, 3) and frames.dtype == np.uint8
    assert np.array_equal(sampler.generate(11, 1)[0], frames[1])  # image s depends on seed s only
    assert set(sampler.prompts) <= set(CaptionedImages(shapes, 16).texts)  # the run's captions


def test_without_the_text_extra(shapes, trained, tmp_path):
    """Without open_clip and timm: sampling a run whose text encoder is the words encoder
    works; training (D's ViT) stops with one line naming the extra."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = f"""
import sys
sys.modules["open_clip"] = None  # neither can be imported in this process
sys.modules["timm"] = None
from vidgen.cli import main
print("train", main(["train", "stylegan-t", *{TINY!r}, "--data", {str(shapes)!r}, "--out", {str(tmp_path / "runs")!r}]))
print("t2i", main(["t2i", "--net", {str(trained)!r}, "--prompt", "a red circle", "--seeds", "0-1",
                   "--out", {str(tmp_path / "g.png")!r}]))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = dict(ln.split()[:2] for ln in run.stdout.splitlines() if ln.startswith(("train ", "t2i ")))
    assert lines == {"train": "2", "t2i": "0"}, run.stdout + run.stderr
    assert "vidgen[text]" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "g.png").is_file()


def _recipe(shapes, **over):
    from vidgen.config import load_config
    from vidgen.stylegan_t.config import StyleGANTConfig
    from vidgen.stylegan_t.recipe import StyleGANTRecipe

    sets = [TINY[i + 1] for i in range(len(TINY)) if TINY[i] == "--set"]
    cfg = load_config(StyleGANTConfig, ROOT / "configs/stylegan-t/tiny.yaml",
                      sets + [f"data.path={shapes}"] + [f"{k}={v}" for k, v in over.items()])
    r = StyleGANTRecipe(cfg, torch.device("cpu"))
    ds = r.dataset()
    return r, torch.utils.data.default_collate([ds[i] for i in range(4)])


CLIP_TEXT = {"text.kind": "clip", "text.arch": "custom", "text.pretrained": "false", "text.custom.embed_dim": 16,
             "text.custom.width": 16, "text.custom.layers": 1}


@pytest.mark.skipif(not (available("timm") and available("open_clip")), reason="the text extra is not installed")
def test_losses_clip_guidance_and_text_encoder_phase(shapes):
    from vidgen.stylegan_t.recipe import gaussian_blur, spherical_distance

    x, y = torch.randn(5, 8), torch.randn(5, 8)
    cos = torch.nn.functional.cosine_similarity(x, y)
    assert torch.allclose(spherical_distance(x, y), torch.arccos(cos) ** 2, atol=1e-5)
    img = torch.zeros(1, 1, 15, 15)
    img[0, 0, 7, 7] = 1
    b = gaussian_blur(img, 2.0)
    assert abs(b.sum().item() - 1) < 1e-5 and b[0, 0, 7, 7] < 0.2 and torch.allclose(b, b.flip(-1).flip(-2))
    torch.manual_seed(0)
    r, batch = _recipe(shapes, **CLIP_TEXT, **{"loss.clip_weight": 0.5, "loss.gan": "hinge"})
    r.D.eval()  # no power iteration between the two evaluations
    torch.manual_seed(1)
    loss, stats = r.loss_g(batch, 0)
    torch.manual_seed(1)
    fake = r.generate(batch["caption"], r.embed(batch["caption"]))
    logits = r.run_d(fake, r.embed(batch["caption"]))
    assert torch.allclose(loss, -logits.mean() + 0.5 * stats["clip_distance"], atol=1e-5)
    assert 0 < float(stats["clip_distance"]) < np.pi ** 2
    # the encoder phase: only G's text encoder is trained, D is conditioned by a frozen copy
    r, batch = _recipe(shapes, **CLIP_TEXT, **{"G.train_mode": "text_encoder"})
    assert all(p.requires_grad for p in r.G.text.parameters())
    assert not any(p.requires_grad for p in r.G.synthesis.parameters())
    assert r.text is not r.G.text and not any(p.requires_grad for p in r.text.parameters())
    r.loss_g(batch, 0)[0].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in r.G.text.parameters())
    assert r.optimizers()["G"].lr == r.cfg.loss.lr_text
    r, _ = _recipe(shapes, **{"loss.blur_sigma": 4.0, "loss.blur_fade_kimg": 1.0})
    r.nimg = 500
    assert r.blur_sigma() == 2.0


@pytest.mark.slow
def test_resume_is_exact(shapes, tmp_path, monkeypatch):
    """Two steps, then two more with --resume, equal four steps in one go (G, G_ema, D with its
    spectral-norm vectors, the x_avg of the mapping, the optimisers)."""
    if not available("timm"):
        pytest.skip("timm (the text extra) is not installed")
    from vidgen.train.checkpoint import read_checkpoint

    monkeypatch.chdir(ROOT)
    four = [*TINY, "--set", "engine.steps=4", "--set", "engine.checkpoint_every=2", "--data", str(shapes)]
    assert main(["train", "stylegan-t", *TINY, "--data", str(shapes), "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "stylegan-t", *four, "--out", str(tmp_path / "a"), "--resume", "auto"]) == 0
    assert main(["train", "stylegan-t", *four, "--out", str(tmp_path / "b")]) == 0
    a, b = (read_checkpoint(next((tmp_path / k).iterdir())) for k in "ab")
    assert a.step == b.step == 4 and a.state["recipe"]["nimg"] == b.state["recipe"]["nimg"] == 4 * 4
    for name in ("G", "G_ema", "D"):
        sa, sb = a.network_state(name), b.network_state(name)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), name
