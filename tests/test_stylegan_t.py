"""StyleGAN-T networks: the layers against textbook forms, truncation, the projected D, the
paper-size layouts and parameter counts, and parity with the reference snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vidgen.nn.filters import upfirdn2d
from vidgen.nn.text import TextEncoderConfig
from vidgen.optional import available
from vidgen.stylegan_t.config import StyleGANTConfig, build_discriminator, build_generator
from vidgen.stylegan_t.discriminator import BatchNormLocal, DinoConfig, DiscriminatorConfig, SpectralConv1d
from vidgen.stylegan_t.generator import RESAMPLE, GeneratorConfig, modulated_up_conv2d

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")
needs_text = pytest.mark.skipif(not (available("open_clip") and available("timm")),
                                reason="open_clip and timm (the text extra) are not installed")


def tiny_cfg(**g) -> StyleGANTConfig:
    return StyleGANTConfig(
        text=TextEncoderConfig(kind="words", dim=16),
        G=GeneratorConfig(img_resolution=16, z_dim=8, channel_base=256, channel_max=16, num_res_blocks=1,
                          gn_groups=4, **g),
        D=DiscriminatorConfig(dino=DinoConfig(embed_dim=16, depth=2, num_heads=2, patch_size=8, img_size=32,
                                              hooks=(0, 1), pretrained=False), cmap_dim=8))


def test_up_conv_is_the_generic_upsampling_conv():
    """Transposed conv + filter == zero insertion, [1,3,3,1] filter (gain 4), then the 3x3
    convolution (flipped kernel) with the demodulated per-sample weight (StyleGAN2)."""
    g = torch.Generator().manual_seed(0)
    x, w, s = torch.randn(2, 5, 6, 6, generator=g), torch.randn(7, 5, 3, 3, generator=g), torch.randn(2, 5, generator=g)
    out = modulated_up_conv2d(x, w, s)
    assert out.shape == (2, 7, 12, 12)
    for b in range(2):
        wb = w * s[b][None, :, None, None]
        wb = wb / wb.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        up = upfirdn2d(x[b:b + 1], RESAMPLE, up=2, padding=(3, 2), gain=2.0)
        ref = F.conv2d(up, wb.flip([2, 3]))
        assert torch.allclose(out[b:b + 1], ref, atol=1e-5), (out[b:b + 1] - ref).abs().max()


def test_generator_text_truncation_and_noise():
    torch.manual_seed(0)
    G = build_generator(tiny_cfg()).eval()
    assert G.num_ws == 2 * (1 + 2) + 1 and G.w_dim == 8 + 16
    z = torch.randn(4, 8)
    red, blue = ["a red circle"] * 4, ["a blue square"] * 4
    with torch.no_grad():
        for layer in G.synthesis.modules():  # noise strengths start at 0: give them a value
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.fill_(0.3)
        G.mapping.x_avg.normal_()
        a, b = G(z, red, noise="const"), G(z, blue, noise="const")
        assert a.shape == (4, 3, 16, 16)
        assert (a - b).abs().mean() > 1e-3  # the text changes the image
        spread = lambda img: img.std(0).mean()
        t1, t5, t0 = G(z, red, psi=1.0, noise="const"), G(z, red, psi=0.5, noise="const"), G(z, red, psi=0.0, noise="const")
        assert spread(t1) > spread(t5) > 1e-4 and spread(t0) < 1e-5  # psi 0: every z gives the mean image
        ws = G.mapping(z, G.embed(red), psi=0.0)
        assert torch.allclose(ws[:, 0, :8], G.mapping.x_avg.expand(4, -1)) and torch.allclose(ws[:, 0, 8:], G.embed(red))
        r1, r2 = G(z, red, noise="random"), G(z, red, noise="random")
        assert (r1 - r2).abs().max() > 1e-4 and torch.equal(G(z, red, noise="const"), a)
        draws = [torch.randn(4, 1, r, r) for r in G.synthesis.noise_shapes()]
        assert torch.equal(G(z, red, noise=draws), G(z, red, noise=draws))
    G.train()
    G(z, red)
    assert not torch.allclose(G.mapping.x_avg, ws[0, 0, :8])  # tracked in training only


def test_spectral_conv_and_local_batch_norm():
    torch.manual_seed(0)
    conv = SpectralConv1d(6, 4, 3)
    x = torch.randn(2, 6, 10)
    for _ in range(50):  # power iterations converge on the top singular value
        conv(x)
    w = conv.weight()
    assert abs(torch.linalg.matrix_norm(w.reshape(4, -1), ord=2).item() - 1) < 1e-3
    conv.eval()
    u = conv.weight_u.clone()
    ref = F.conv1d(F.pad(x, (1, 1), mode="circular"), conv.weight_orig / torch.dot(u, conv.weight_orig.reshape(4, -1) @ conv.weight_v),
                   conv.bias)
    assert torch.allclose(conv(x), ref, atol=1e-6) and torch.equal(conv.weight_u, u)  # eval: buffers kept
    bn = BatchNormLocal(3, virtual_batch=2)
    y = torch.randn(4, 3, 5) * 3 + 1
    out = bn(y)
    for g in range(2):  # statistics of each group of 2 samples, over samples and tokens
        part = y[2 * g:2 * g + 2]
        mean, var = part.mean(dim=(0, 2), keepdim=True), part.var(dim=(0, 2), unbiased=False, keepdim=True)
        assert torch.allclose(out[2 * g:2 * g + 2], (part - mean) / torch.sqrt(var + 1e-5), atol=1e-5)
    assert bn(torch.randn(5, 3, 4)).shape == (5, 3, 4)  # uneven groups


@needs_text
def test_discriminator_logits_and_conditioning():
    torch.manual_seed(0)
    D, digest = build_discriminator(tiny_cfg(), c_dim=16)
    assert digest == ""
    D.eval()
    x, c = torch.rand(4, 3, 16, 16) * 2 - 1, F.normalize(torch.randn(4, 16), dim=1)
    out = D(x, c)
    assert out.shape == (4, 3 * 16)  # heads: 2 hooked blocks + the patch tokens; 4x4 tokens of 8x8 patches at 32
    assert (D(x, c.flip(0)) - out).abs().mean() > 1e-4  # projection onto the text embedding
    assert all(not p.requires_grad for p in D.dino.parameters())
    D.train()
    assert not D.dino.training and D.heads.training


def _paper(networks: dict, name: str) -> dict[str, tuple]:
    return {k: tuple(s) for k, s, _, _ in networks[name]["state_dict"]}


@needs_text
def test_paper_layouts_match_the_reference(shared_data):
    """Every tensor of the paper's full / lite G and D (paper_shapes.json) has a vidgen
    counterpart of the same shape, and nothing else exists (the [1,3,3,1] filters are fixed)."""
    from vidgen.config import load_config
    from vidgen.stylegan_t.convert import _d_key, _g_key

    nets = json.loads((shared_data / "reference/stylegan-t/paper_shapes.json").read_text())["networks"]
    for preset, name in (("full-64", "G_full_64"), ("lite-64", "G_lite_64")):
        cfg = load_config(StyleGANTConfig, ROOT / f"configs/stylegan-t/{preset}.yaml")
        G = build_generator(cfg, "meta")
        ref = {_g_key(k): s for k, s in _paper(nets, name).items() if not k.endswith("resample_filter")}
        ours = {k: tuple(v.shape) for k, v in G.state_dict().items()}
        assert ours == ref, preset
        assert sum(p.numel() for p in G.parameters()) == nets[name]["num_params"]
    D, _ = build_discriminator(load_config(StyleGANTConfig, ROOT / "configs/stylegan-t/lite-64.yaml"), 768, "meta")
    ref = {_d_key(k): s for k, s in _paper(nets, "D_64").items()}
    assert {k: tuple(v.shape) for k, v in D.state_dict().items()} == ref
    assert sum(p.numel() for p in D.parameters()) == nets["D_64"]["num_params"] == 29_419_264


@needs_text
def test_dry_run_prints_the_paper_counts(capsys, monkeypatch):
    from vidgen.cli import main

    monkeypatch.chdir(ROOT)
    for preset, g in (("full-64", "1,099,206,316"), ("lite-64", "198,207,140")):
        assert main(["train", "stylegan-t", "--config", f"configs/stylegan-t/{preset}.yaml", "--dry-run"]) == 0
        out = capsys.readouterr().out
        lines = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln.strip() and ln.split()[0]
                 in ("G", "D", "G.text", "G.synthesis", "G.mapping", "D.dino", "D.heads")}
        assert lines["G"] == g and lines["G.text"] == "123,650,305" and lines["D"] == "29,419,264"
        assert lines["D.heads"] == "7,753,600" and lines["D.dino"] == "21,665,664"
        outside = int(lines["G.synthesis"].replace(",", "")) + int(lines["G.mapping"].replace(",", ""))
        assert outside == {"full-64": 975_556_011, "lite-64": 74_556_835}[preset]
        # the trainable part (outside the frozen CLIP and DINO) is printed as such
        trainable = {ln.split()[1]: ln.split()[2] for ln in out.splitlines() if ln.split()[:1] == ["trainable"]}
        assert trainable == {"G": f"{outside:,d}", "D": "7,753,600"}


@needs_text
def test_imported_snapshot_matches_the_reference(shared_data, tmp_path, capsys):
    """`vidgen import` of the reference snapshot (read without running its code); from the
    recorded text embeddings G's images (psi 1 and 0.7, constant and replayed random noise)
    and D's logits (DiffAugment off) match the recorded ones within 1e-5 relative."""
    from safetensors.torch import load_file

    from vidgen.stylegan_t.family import load_discriminator, load_generator, seed_latents

    from vidgen.cli import main

    ref = shared_data / "reference/stylegan-t"
    assert main(["import", str(ref / "network-snapshot.pkl"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "G               359,356" in out and "D               256,736" in out  # config.json num_params
    assert "were not run" in out  # the hooks stored as code
    io = load_file(str(ref / "io.safetensors"))
    G, cfg, _ = load_generator(tmp_path / "run")
    D = load_discriminator(tmp_path / "run")
    assert torch.equal(seed_latents([1, 2], 64), io["z"])  # gen_images.py latents

    def rel(a, b):  # max |a - b| relative to max |b|; and the values vary across the batch
        assert b.std() > 0.1
        return ((a - b).abs().max() / b.abs().max()).item()

    z, c = io["z"], io["c_text"]
    with torch.no_grad():
        assert torch.allclose(G.mapping(z, c), io["ws"], rtol=1e-6, atol=1e-6)
        assert torch.allclose(G.mapping(z, c, psi=0.7), io["ws_psi07"], rtol=1e-6, atol=1e-6)
        noise = [io[f"noise_random.{i:02d}"] for i in range(14)]
        errors = {"img_const": rel(G(z, c, noise="const"), io["img_const"]),
                  "img_psi07": rel(G(z, c, psi=0.7, noise="const"), io["img_psi07"]),
                  "img_random_noise": rel(G(z, c, noise=noise), io["img_random_noise"]),
                  "D_logits": rel(D(io["D_input"], io["D_c"]), io["D_logits"])}
    assert max(errors.values()) < 1e-5, errors
    assert G.synthesis.noise_shapes() == [8] * 4 + [16] * 5 + [32] * 5
