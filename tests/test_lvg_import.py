"""The long-video GAN's published low-res checkpoints: conversion, parity with the reference
implementation's recorded outputs, full-size layouts, and the run folders every command takes
(`vidgen import`, `vidgen generate`, `vidgen train --resume / --init`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import av
import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file

from vidgen import safe_pickle as sp
from vidgen.cli import main
from vidgen.config import config_from_dict, load_config
from vidgen.data.synthetic import make_drive
from vidgen.lvg.convert import LOWRES_IMPORTER, discriminator_key, generator_key
from vidgen.lvg.lowres_plan import take
from vidgen.lvg.recipe import LowResConfig, build_discriminator, build_generator
from vidgen.train.checkpoint import list_checkpoints, read_checkpoint
from vidgen.train.published import UnsupportedCheckpoint

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # max |diff| / max |ref|, float32
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref(shared_data) -> Path:
    path = shared_data / "reference" / "lvg"
    if not path.is_dir():
        pytest.skip(f"long-video GAN reference fixtures not found at {path}")
    return path


@pytest.fixture(scope="module")
def io(ref) -> dict[str, torch.Tensor]:
    return load_file(str(ref / "io.safetensors"))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).abs().max() / b.abs().max()).item()


def _networks(ref: Path, name: str):
    run = LOWRES_IMPORTER.convert(sp.load(ref / name), ref / name)
    cfg = config_from_dict(LowResConfig, run.config)
    return run, cfg


@pytest.fixture(scope="module")
def G(ref):
    run, cfg = _networks(ref, "lres_G_ema.pkl")
    G = build_generator(cfg).eval()
    G.load_state_dict(run.networks["G_ema"])  # strict: every key and shape
    return G


def _recorded_noise(G, io):
    """noise_fn over the recorded draw: the reference's noise sample j is frame j - frame_offset."""
    noise = io["lres_temporal_noise"]
    off = G.plan(16).frame_offset
    assert noise.shape[2] == G.plan(16).level_len[0] + G.latent.kernel_size - 1
    return lambda a, b: noise[:, :, a + off:b + off]


# --- parity with the reference's recorded outputs -------------------------------------------------
def test_filtered_temporal_latent(G, io):
    feats = G.latent.features(io["lres_temporal_noise"])
    assert _rel(feats, io["lres_temporal_emb"]) < TOL
    w = rearrange(G.latent.mapping(rearrange(feats, "b c t -> b t c")), "b t c -> b c t")
    assert _rel(w, io["lres_latent_w"]) < TOL


@torch.no_grad()
def test_latent_at_every_level_and_temporal_input(G, io):
    plan = G.plan(16)
    ws = G.level_ws(G.latent_w(_recorded_noise(G, io), plan, torch.float32), plan)
    for k in range(1, 7):  # w of temporal block k - 1, where the render computes it
        lvl, off, (lo, hi) = plan.block_level[k - 1], plan.ws_offset[k - 1], plan.block_in[k - 1]
        lo, hi = max(lo, 0), min(hi, plan.lengths[k - 1])
        mine = take(ws[lvl], plan.level_range[lvl][0], off + lo, off + hi, plan.level_len[lvl])
        assert _rel(mine, io[f"lres_latent_ws.{k:02d}"][:, :, lo:hi]) < TOL, k
    frames = take(ws[0], plan.level_range[0][0], plan.frame_offset, plan.frame_offset + 16, plan.level_len[0])
    assert _rel(frames, io["lres_latent_ws.07"]) < TOL
    lo, hi = plan.block_in[0]
    w_in = take(ws[5], plan.level_range[5][0], plan.ws_offset[0] + lo, plan.ws_offset[0] + hi, plan.level_len[5])
    temporal = rearrange(G.w_to_input(rearrange(w_in, "b c t -> b t c")), "b t c -> b c t")
    a, b = max(lo, 0), min(hi, 17)
    assert _rel(temporal[:, :, a - lo:b - lo], io["lres_temporal_input"][:, :, a:b]) < TOL


@torch.no_grad()
def test_video_and_windows(G, io):
    noise = _recorded_noise(G, io)
    video = G.render(noise, 16)
    assert _rel(video, io["lres_video"]) < TOL
    for i, (a, b) in enumerate([(0, 8), (8, 16)]):  # rendered on their own, not sliced
        assert _rel(G.render(noise, 16, a, b), io[f"lres_window_{i}"]) < TOL
    other = G.render(lambda a, b: torch.randn(2, 4, b - a), 16)
    assert _rel(other, io["lres_video"]) > 0.1  # the comparison is not degenerate


@torch.no_grad()
def test_discriminator_logits(ref, io):
    run, cfg = _networks(ref, "lres_train.pkl")
    D = build_discriminator(cfg).eval()
    D.load_state_dict(run.networks["D"])
    logits = D(io["lres_video"])
    assert _rel(logits, io["lres_D_logits"]) < TOL
    assert _rel(D(io["lres_video"].flip(2)), io["lres_D_logits"]) > 1e-3  # logits depend on the input


# --- conversion --------------------------------------------------------------------------------
def test_converted_config_and_report(ref):
    cfg_json = json.loads((ref / "config.json").read_text())
    run, cfg = _networks(ref, "lres_train.pkl")
    assert cfg.data.resolution == (36, 64) and cfg.data.clip_len == 16
    assert cfg.model.G.temporal_channels == (32, 32, 32, 32, 32, 16, 16)
    assert cfg.model.G.latent.noise_channels == 4 and cfg.model.G.latent.num_filters == 16
    assert cfg.model.D.channels == (4, 8, 16, 32, 64) and cfg.model.D.head_channels == 64
    assert cfg.loss.lr_g == pytest.approx(0.003) and cfg.loss.lr_d == pytest.approx(0.002)
    assert cfg.loss.r1_interval == 16  # from D's beta2 = 0.99 ** (16 / 17)
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert sum(p.numel() for p in G.parameters()) == cfg_json["checkpoints"]["lres_G_ema.pkl"]["num_params"]
    assert sum(p.numel() for p in D.parameters()) == cfg_json["checkpoints"]["lres_train.pkl"]["num_params_D"]
    assert set(run.networks) == {"G", "D"} and set(run.optimizers) == {"G", "D"}
    text = " ".join(run.report)
    assert "left out: 12 filter buffers" in text and "not in the file: G_ema" in text


def test_unknown_arguments_and_classes_are_listed(ref):
    tree = sp.load(ref / "lres_G_ema.pkl")
    odd = copy.copy(tree)
    odd.init_kwargs = {**tree.init_kwargs, "use_noise": True, "fancy": 1}
    with pytest.raises(UnsupportedCheckpoint, match="VideoGenerator: unknown constructor arguments fancy, use_noise"):
        LOWRES_IMPORTER.convert(odd, ref / "x.pkl")
    mods = dict(sp.modules(tree))
    mods["to_rgb"].class_name = "ToRGBWithNoise"
    with pytest.raises(UnsupportedCheckpoint, match="unknown classes ToRGBWithNoise"):
        LOWRES_IMPORTER.convert(tree, ref / "x.pkl")
    assert LOWRES_IMPORTER.detect(sp.load(ref / "lres_train.pkl"))
    assert not LOWRES_IMPORTER.detect(sp.load(ref / "sres_G_ema.pkl"))


def test_filters_of_another_design_are_refused(ref):
    tree = sp.load(ref / "lres_G_ema.pkl")
    blur = dict(sp.modules(tree))["temporal_emb"]
    blur.state["_buffers"]["blur_filters"] = blur.state["_buffers"]["blur_filters"].roll(1, dims=2)
    with pytest.raises(UnsupportedCheckpoint, match="filters differ from vidgen's design"):
        LOWRES_IMPORTER.convert(tree, ref / "x.pkl")


@pytest.mark.parametrize("net", ["lres_G", "lres_D"])
def test_paper_size_layouts_use_every_key(ref, net):
    """The paper-size networks' state dicts (shapes only): every key maps onto vidgen's names or
    is a filter buffer vidgen rebuilds, nothing is left over, the shapes fit a vidgen network
    built from the paper config, and the parameter counts are equal."""
    info = json.loads((ref / "paper_shapes.json").read_text())["networks"][net]
    cfg = load_config(LowResConfig, ROOT / "configs/lvg/lowres-paper.yaml")
    with torch.device("meta"):
        mine = (build_generator if net == "lres_G" else build_discriminator)(cfg)
    want = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
    rule = generator_key if net == "lres_G" else discriminator_key
    mapped, derived = {}, []
    for key, shape, _, _ in info["state_dict"]:
        r = rule(key)
        assert r is not None, f"unknown key {key}"
        if r[0] == "derived":
            derived.append(key)
            continue
        t = torch.empty(shape, device="meta")
        mapped[r[0]] = tuple((r[1](t) if r[1] else t).shape)
    assert mapped == want  # every vidgen tensor, no other, same shapes
    assert len(mapped) + len(derived) == len(info["state_dict"])
    assert sum(p.numel() for p in mine.parameters()) == info["num_params"]


# --- run folders -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drive")
    make_drive(root, frames=40, size=(36, 64), videos=1)
    return root


def test_import_then_generate(ref, tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["import", str(ref / "lres_G_ema.pkl"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "family:      lvg-lowres" in printed and "resolution:  36x64" in printed
    assert "G_ema" in printed and "326,359" in printed and "not resumable" in printed
    video = tmp_path / "v.mp4"
    assert main(["generate", "--lowres", str(out), "--frames", "300", "--out", str(video), "--window", "100"]) == 0
    with av.open(str(video)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 300 and frames[0].shape == (36, 64, 3)
    assert frames[0].std() > 1 and abs(frames[0].astype(float) - frames[299]).mean() > 1  # not blank, it moves


def test_resume_an_imported_training_checkpoint(ref, drive, tmp_path):
    out = tmp_path / "train"
    assert main(["import", str(ref / "lres_train.pkl"), "--out", str(out)]) == 0
    before = read_checkpoint(out)
    assert before.state["imported"]["resumable"] and set(before.network_names) == {"G", "D", "G_ema"}
    args = ["train", "lvg-lowres", "--resume", str(out), "--data", str(drive), "--set", "engine.steps=1",
            "--set", "engine.batch=2", "--set", "engine.accum=1", "--set", "engine.workers=0",
            "--set", "engine.device=cpu", "--set", "model.slack=4"]
    assert main(args) == 0
    ckpts = list_checkpoints(out)
    assert [c.name for c in ckpts] == ["step-000000000", "step-000000001"]
    after = read_checkpoint(ckpts[-1])
    for name in ("G", "D"):
        a, b = before.network_state(name), after.network_state(name)
        assert set(a) == set(b) and any(not torch.equal(a[k], b[k]) for k in a), name
    moments = after.train_tensors()
    assert any(k.startswith("optim/G/state/") for k in moments) and any(k.startswith("optim/D/state/") for k in moments)


def test_init_a_new_run_from_the_imported_generator(ref, drive, tmp_path, capsys):
    src = tmp_path / "gema"
    assert main(["import", str(ref / "lres_G_ema.pkl"), "--out", str(src)]) == 0
    args = ["train", "lvg-lowres", "--init", str(src), "--data", str(drive), "--out", str(tmp_path / "runs"),
            "--set", "engine.steps=1", "--set", "engine.batch=2", "--set", "engine.accum=1",
            "--set", "engine.workers=0", "--set", "engine.device=cpu", "--set", "data.clip_len=16",
            "--set", "model.slack=4", "--set", "model.D.channels=[4, 8, 8, 8, 8]", "--set", "model.D.head_channels=8"]
    capsys.readouterr()
    assert main(args) == 0
    assert "G: from G_ema" in capsys.readouterr().err
    run = next((tmp_path / "runs").iterdir())
    c = read_checkpoint(run)
    assert c.step == 1 and c.family == "lvg-lowres"
    published = read_checkpoint(src).network_state("G_ema")
    ema = c.network_state("G_ema")  # one step of EMA from the published weights: close, not equal
    k = "temporal_blocks.0.weight0"
    assert (ema[k] - published[k]).abs().max() < 0.1 * published[k].abs().max()
    assert c.config["model"]["G"]["temporal_channels"] == [32, 32, 32, 32, 32, 16, 16]


def test_an_imported_run_is_a_fake_source_for_eval(ref, tmp_path, G, io):
    """`vidgen eval --fake RUN` samples the run through the family's registered sampler."""
    from vidgen.metrics.inputs import load_fake

    out = tmp_path / "imported"
    assert main(["import", str(ref / "lres_G_ema.pkl"), "--out", str(out)]) == 0
    fake = load_fake(str(out))
    assert fake.kind == "checkpoint" and fake.checkpoint_step == 0
    clip = fake.clip(0, seed=5, indices=torch.arange(0, 16, 2).numpy())
    assert clip.shape == (8, 36, 64, 3) and clip.dtype.name == "uint8" and clip.std() > 1
    with torch.no_grad():
        direct = G.render_seeds([5], 16)[0].clamp(-1, 1)  # the 16-frame video of seed 5
    expect = ((direct[:, ::2].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255)
    assert (torch.from_numpy(clip).float() - expect).abs().max() <= 1
