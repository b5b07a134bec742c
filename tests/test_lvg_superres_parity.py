"""Long-video GAN super-res parity with the reference code (../shared/data/reference/lvg,
made by NVlabs/long-video-gan): the super-res G continues from the recorded low-res video
with the recorded z; frames and D logits within 1e-5 relative in float32. Plus the full-size
layouts of paper_shapes.json (sres_G, sres_D)."""

import json

import pytest
import torch

from vidgen.lvg.convert_superres import (discriminator_config, discriminator_state, generator_config,
                                         generator_state)
from vidgen.lvg.superres import SuperResDiscriminator, SuperResGenerator, SuperResModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-5
TRAIN_STUBS = ("torch_utils.training_stats.Collector", "re._compile")


@pytest.fixture(scope="module")
def ref(shared_data):
    return shared_data / "reference" / "lvg"


@pytest.fixture(scope="module")
def io(ref):
    from safetensors.torch import load_file

    return load_file(ref / "io.safetensors")


def rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def model_config(g: dict, d: dict) -> SuperResModelConfig:
    g = {**g, "lowres": tuple(g["lowres"]), "highres": tuple(g["highres"])}
    return SuperResModelConfig(**g, **d)


@pytest.fixture(scope="module")
def nets(ref):
    from vidgen import safe_pickle

    g_tree = safe_pickle.load(ref / "sres_G_ema.pkl")
    train = safe_pickle.load(ref / "sres_train.pkl", allow_stubs=TRAIN_STUBS)
    problems, notes = [], []
    cfg = model_config(generator_config(g_tree.init_kwargs, g_tree.state["_modules"]["SG3"].init_kwargs,
                                        problems, notes),
                       discriminator_config(train["D"].init_kwargs, problems, notes))
    assert problems == [] and notes == []
    out = {"cfg": cfg}
    for key, record, fn, cls in (("G_ema", g_tree, generator_state, SuperResGenerator),
                                 ("G", train["G"], generator_state, SuperResGenerator),
                                 ("D", train["D"], discriminator_state, SuperResDiscriminator)):
        sm = fn(safe_pickle.state_dict(record), cfg, key)
        assert sm.finish() == [], sm.problems
        assert len(sm.used) == len(sm.source) and sm.constants > 0
        net = cls(cfg).eval()
        net.load_state_dict(sm.out, strict=True)
        out[key] = net
    return out


def test_superres_frames_and_logits_match_the_reference(nets, io):
    cfg, G, D = nets["cfg"], nets["G_ema"], nets["D"]
    assert (cfg.lowres, cfg.highres, cfg.context) == ((36, 64), (72, 128), 4)
    lowres, z = io["lres_video"], io["sres_latent_z"]
    K = cfg.context
    with torch.no_grad():
        errs = {"ws": rel_err(G.mapping(z), io["sres_ws"][:, 0])}
        video = G(lowres, z)  # all 8 frames in one call
        errs["sres_video"] = rel_err(video, io["sres_video"])
        # as the reference renders it: windows of 4 output frames (12 low-res frames each)
        windows = torch.cat([G(lowres[:, :, t:t + 4 + 2 * K], z) for t in (0, 4)], dim=2)
        errs["sres_video (4-frame windows)"] = rel_err(windows, io["sres_video"])
        logits = D(D.upsample_lowres(lowres[:, :, K:K + 4]), io["sres_video"][:, :, :4])
        errs["sres_D_logits"] = rel_err(logits, io["sres_D_logits"])
    print("lvg super-res worst relative errors:", {k: f"{v:.2e}" for k, v in errs.items()})
    assert max(errs.values()) <= TOL, errs
    assert (video[:, :, 1:] - video[:, :, :1]).abs().max() > 1e-3  # frames differ with the low-res input
    assert (logits[0] - logits[1]).abs().max() > 1e-4


def test_checkpoints_without_w_avg_still_load(nets):
    cfg, G = nets["cfg"], nets["G_ema"]
    sd = {k: v for k, v in G.state_dict().items() if k != "mapping.w_avg"}
    fresh = SuperResGenerator(cfg)
    fresh.load_state_dict(sd, strict=True)
    assert fresh.mapping.w_avg.abs().max() == 0


def paper_source(entry: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape, *_ in entry["state_dict"]}


def test_full_size_layouts_import_every_key(ref):
    shapes = json.loads((ref / "paper_shapes.json").read_text())["networks"]
    g_entry, d_entry = shapes["sres_G"], shapes["sres_D"]
    strip = lambda c: {k: v for k, v in c.items() if k != "class_name"}  # noqa: E731
    problems, notes = [], []
    cfg = model_config(generator_config(strip(g_entry["constructor"]), {}, problems, notes),
                       discriminator_config(strip(d_entry["constructor"]), problems, notes))
    assert problems == []
    assert (cfg.lowres, cfg.highres, cfg.channel_base, cfg.d_channel_base) == ((36, 64), (144, 256), 32768, 16384)
    with torch.device("meta"):
        G, D = SuperResGenerator(cfg), SuperResDiscriminator(cfg)
    for entry, net, fn in ((g_entry, G, generator_state), (d_entry, D, discriminator_state)):
        sm = fn(paper_source(entry), cfg, verify_constants=False)
        assert sm.finish() == [] and len(sm.used) == len(entry["state_dict"])
        want = net.state_dict()
        assert set(sm.out) == set(want) and all(tuple(sm.out[k].shape) == tuple(want[k].shape) for k in want)
        assert sum(p.numel() for p in net.parameters()) == entry["num_params"]
    assert g_entry["num_params"] == 27_169_940 and d_entry["num_params"] == 23_997_825


def test_imported_runs_reproduce_the_reference(ref, io, tmp_path):
    """`vidgen import` of both super-res pickles: run folders whose networks give the recorded
    outputs; the train pickle's run resumes (G, D, optimiser settings, ADA state)."""
    from vidgen.config import config_from_dict
    from vidgen.lvg.recipe_superres import SuperResConfig
    from vidgen.train.checkpoint import load_network, read_checkpoint
    from vidgen.train.published import load_and_convert, write_run

    build_g = lambda c: SuperResGenerator(config_from_dict(SuperResConfig, c).model)  # noqa: E731
    build_d = lambda c: SuperResDiscriminator(config_from_dict(SuperResConfig, c).model)  # noqa: E731
    lowres, K = io["lres_video"], 4
    written = write_run(load_and_convert(ref / "sres_G_ema.pkl"), tmp_path / "g", ref / "sres_G_ema.pkl")
    assert not written.resumable and written.parameters == {"G_ema": 221_257}
    G = load_network(read_checkpoint(tmp_path / "g"), "G_ema", build_g).eval()
    with torch.no_grad():
        assert rel_err(G(lowres, io["sres_latent_z"]), io["sres_video"]) <= TOL
    run = load_and_convert(ref / "sres_train.pkl")
    assert run.family == "lvg-superres" and set(run.optimizers) == {"G", "D"}
    written = write_run(run, tmp_path / "t", ref / "sres_train.pkl")
    assert written.resumable
    c = read_checkpoint(tmp_path / "t")
    cfg = config_from_dict(SuperResConfig, c.config)
    assert cfg.loss.lr_g == pytest.approx(0.003) and cfg.loss.lr_d == pytest.approx(0.003)  # 16/17 undone
    assert (cfg.loss.input_p, cfg.loss.input_strength) == (0.5, pytest.approx(8.0))
    D = load_network(c, "D", build_d).eval()
    with torch.no_grad():
        logits = D(D.upsample_lowres(lowres[:, :, K:K + 4]), io["sres_video"][:, :, :4])
    assert rel_err(logits, io["sres_D_logits"]) <= TOL


def test_each_reference_pickle_has_exactly_one_importer(shared_data):
    from vidgen import safe_pickle
    from vidgen.families import load_families
    from vidgen.train.published import importers

    load_families()
    found = importers()
    stubs = tuple(s for imp in found.values() for s in getattr(imp, "allow_stubs", ()))
    expect = {"lvg/sres_G_ema.pkl": "lvg-superres", "lvg/sres_train.pkl": "lvg-superres",
              "stylegan3/stylegan3-t-snapshot.pkl": "sg3", "stylegan3/stylegan3-r-snapshot.pkl": "sg3"}
    for rel, family in expect.items():
        tree = safe_pickle.load(shared_data / "reference" / rel, allow_stubs=stubs)
        assert [n for n, imp in found.items() if imp.detect(tree)] == [family], rel
    for rel in ("lvg/lres_G_ema.pkl", "lvg/lres_train.pkl"):  # low-res: not ours
        tree = safe_pickle.load(shared_data / "reference" / rel, allow_stubs=stubs)
        assert not found["sg3"].detect(tree) and not found["lvg-superres"].detect(tree)


def test_imported_lowres_and_superres_render_together(ref, tmp_path):
    """`vidgen import` of the low-res and super-res G_ema pickles, then `vidgen generate
    --lowres X --superres Y`: a super-resolved video of the imported pair."""
    import contextlib
    import io as _io

    from vidgen.cli import main
    from vidgen.data.sources import open_source

    for name in ("lres_G_ema", "sres_G_ema"):
        with contextlib.redirect_stdout(_io.StringIO()):
            assert main(["import", str(ref / f"{name}.pkl"), "--out", str(tmp_path / name)]) == 0
    out = tmp_path / "v.mp4"
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        assert main(["generate", "--lowres", str(tmp_path / "lres_G_ema"), "--superres", str(tmp_path / "sres_G_ema"),
                     "--frames", "4", "--out", str(out)]) == 0
    with open_source(out) as src:
        frames = src.get(list(range(len(src))))
    assert frames.shape == (4, 72, 128, 3) and frames.std() > 1
