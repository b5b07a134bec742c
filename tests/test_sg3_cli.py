"""`vidgen import` of the StyleGAN3 reference snapshots, then `vidgen sg3 generate` on the run:
the seeds name the reference's latents, so the PNGs equal the recorded reference images
(to one 8-bit level); transforms, walks and errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.render.writer import to_uint8_frames

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def vidgen(*args, check=True) -> Result:
    """The command line in this process (the parser and error handling of `vidgen`)."""
    import contextlib
    import io as _io

    from vidgen.cli import main

    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    if check and code != 0:
        raise AssertionError(f"vidgen {' '.join(map(str, args))} failed:\n{err.getvalue()[-3000:]}")
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def ref(shared_data):
    return shared_data / "reference" / "stylegan3"


@pytest.fixture(scope="module")
def io(ref):
    from safetensors.torch import load_file

    return load_file(ref / "io.safetensors")


@pytest.fixture(scope="module")
def runs(ref, tmp_path_factory):
    out = tmp_path_factory.mktemp("sg3runs")
    for tag in ("t", "r"):
        proc = vidgen("import", ref / f"stylegan3-{tag}-snapshot.pkl", "--out", out / tag)
        assert "family:      sg3" in proc.stdout and "32x32" in proc.stdout
        assert "116/116 tensors used" in proc.stdout or "114/114 tensors used" in proc.stdout
    return out


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def reference_png(img: torch.Tensor) -> np.ndarray:
    return to_uint8_frames(img.clamp(-1, 1), layout="CTHW")[0].astype(int)


def test_seed_latents_are_the_reference_latents(io):
    from vidgen.sg3.recipe import seed_latents

    torch.testing.assert_close(seed_latents([1, 2], 64), io["t_z"], rtol=0, atol=0)


def test_generate_reproduces_the_reference_images(runs, io, tmp_path):
    # config T, conditional: seed 1 draws class 1 (seed mod 4), seed 2 is asked for class 3 (the recorded labels)
    for key, extra in (("t_img", ()), ("t_img_psi07", ("--psi", "0.7")),
                       ("t_img_transformed", ("--translate", "0.1,-0.2", "--rotate", "15"))):
        out = tmp_path / key
        vidgen("sg3", "generate", "--run", runs / "t", "--seeds", 1, *extra, "--out", out)
        diff = np.abs(png(out / "seed0001.png") - reference_png(io[key][0]))
        assert diff.max() <= 1, (key, diff.max())
    vidgen("sg3", "generate", "--run", runs / "t", "--seeds", 2, "--class", 3, "--out", tmp_path / "t2")
    assert np.abs(png(tmp_path / "t2" / "seed0002.png") - reference_png(io["t_img"][1])).max() <= 1
    # config R, unconditional: seeds 1, 2 as a grid, through a real `vidgen` process
    proc = subprocess.run([sys.executable, "-m", "vidgen", "sg3", "generate", "--run", str(runs / "r"), "--seeds",
                           "1-2", "--psi", "0.7", "--out", str(tmp_path / "grid.png")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    grid = png(tmp_path / "grid.png")
    assert grid.shape == (32, 66, 3)  # two tiles, 2 px apart
    for i in range(2):
        assert np.abs(grid[:, 34 * i:34 * i + 32] - reference_png(io["r_img_psi07"][i])).max() <= 1
    assert np.abs(reference_png(io["r_img_psi07"][0]) - reference_png(io["r_img_psi07"][1])).max() > 4


def test_walk_and_pan_videos(runs, tmp_path):
    from vidgen.data.sources import open_source
    from vidgen.sg3.cli import catmull_rom
    from vidgen.sg3.family import SG3Sampler, load_generator

    vidgen("sg3", "generate", "--run", runs / "t", "--seeds", "1-3", "--interp", "--frames", 6, "--out",
           tmp_path / "walk")  # lossless PNG frames
    sampler = SG3Sampler(load_generator(runs / "t"))
    with torch.no_grad():
        ws = catmull_rom(sampler.ws([1, 2, 3]), 6)
        want = to_uint8_frames(sampler.G.synthesis(ws).clamp(-1, 1), layout="TCHW").astype(int)
    for f in range(6):
        assert np.abs(png(tmp_path / "walk" / f"{f:06d}.png") - want[f]).max() <= 1
    torch.testing.assert_close(ws[0], sampler.ws([1])[0])  # the walk passes through every seed's w
    torch.testing.assert_close(ws[2], sampler.ws([2])[0])
    vidgen("sg3", "generate", "--run", runs / "r", "--seeds", 5, "--pan", "0.25,0", "--frames", 4, "--fps", 10,
           "--out", tmp_path / "pan.mp4")
    with open_source(tmp_path / "pan.mp4") as src:
        assert len(src) == 4 and src.get([0]).shape == (1, 32, 32, 3)


def test_sampler_from_the_registry(runs):
    from vidgen import registry
    from vidgen.families import load_families

    load_families()
    fam = registry.get("sg3")
    assert fam.kind == "image"
    sampler = registry.resolve(fam.sampler)(runs / "t", "cpu")
    imgs = sampler.generate(10, 3)
    assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.uint8
    assert np.abs(imgs[0].astype(int) - imgs[1]).max() > 10
    assert np.array_equal(sampler.generate(11, 2), imgs[1:])  # image i is seed + i, whatever n is


def test_user_errors_are_one_line(runs, tmp_path):
    for args, text in (((runs / "r", "--class", "1"), "unconditional"),
                       ((runs / "t", "--class", "7"), "out of range"),
                       ((runs / "t", "--seeds", "a-b"), "--seeds"),
                       ((runs / "t", "--translate", "0.1"), "--translate"),
                       ((tmp_path / "missing",), "")):
        proc = vidgen("sg3", "generate", "--run", *args, "--out", tmp_path / "x.png", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("vidgen: error:"), proc.stderr
        assert not (tmp_path / "x.png").exists()
        assert text in lines[0]


def test_fine_tuning_starts_from_an_imported_snapshot(runs, tmp_path):
    """`vidgen train sg3 --init RUN`: the imported networks (G, D, G_ema) and config start a new run."""
    from vidgen.config import config_from_dict
    from vidgen.sg3.networks import Generator
    from vidgen.sg3.recipe import SG3Config
    from vidgen.train.checkpoint import load_network, read_checkpoint

    vidgen("train", "sg3", "--init", runs / "t", "--data", "synthetic", "--out", tmp_path, "--set", "engine.steps=1",
           "--set", "engine.batch=4", "--set", "engine.workers=0", "--set", "engine.device=cpu")
    run = next(tmp_path.glob("*-sg3-t-synthetic-32x32-b4"))
    c = read_checkpoint(run)
    assert c.step == 1 and c.config["model"]["c_dim"] == 4
    build = lambda cfg: Generator(config_from_dict(SG3Config, cfg).model)  # noqa: E731
    before, after = load_network(runs / "t", "G", build), load_network(c, "G", build)
    delta = max((a - b).abs().max().item() for a, b in zip(after.parameters(), before.parameters()))
    assert 0 < delta < 0.5  # the trained G is one small step away from the imported G


def test_eval_equivariance_metrics(runs, tmp_path):
    """`vidgen eval --fake RUN --metrics eqt..._int,eqt..._frac,eqr...`: no real data needed;
    the values are in the report with their protocol, and repeat for the same seed."""
    import json

    args = ("eval", "--fake", runs / "r", "--metrics", "eqt4_int,eqt4_frac,eqr4", "--quiet")
    vidgen(*args, "--out", tmp_path / "a")
    vidgen(*args, "--out", tmp_path / "b")
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert set(report["metrics"]) == {"eqt4_int", "eqt4_frac", "eqr4"}
    for e in report["metrics"].values():
        assert 5 < e["value"] < 200 and e["unit"] == "dB" and e["protocol"]["num_images"] == 4
    again = json.loads((tmp_path / "b" / "report.json").read_text())["metrics"]
    assert {k: e["value"] for k, e in report["metrics"].items()} == {k: e["value"] for k, e in again.items()}
    proc = vidgen("eval", "--fake", runs / "r", "--metrics", "eqr4,fid50k_full", "--out", tmp_path / "c", check=False)
    assert proc.returncode == 2 and "--real is needed for fid50k_full" in proc.stderr


def test_eval_fid_through_the_sampler(runs, tmp_path):
    """`vidgen eval --fake RUN` reads the family from the run and draws images with its sampler;
    image metrics and equivariance share one report."""
    import json

    from vidgen.sg3.data import SyntheticBlobs

    real = tmp_path / "real"
    real.mkdir()
    ds = SyntheticBlobs(12, 32, 4)
    for i in range(12):
        Image.fromarray(to_uint8_frames(ds[i][0], layout="CTHW")[0]).save(real / f"{i:03d}.png")
    vidgen("eval", "--real", real, "--fake", runs / "t", "--metrics", "fid12_full,eqt2_frac", "--detector",
           "inception=random:16", "--no-companions", "--quiet", "--out", tmp_path / "e")
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["fake"]["sampler"]["family"] == "sg3" and report["metrics"]["fid12_full"]["num_fake"] == [12]
    assert report["metrics"]["fid12_full"]["value"] > 0 and report["metrics"]["eqt2_frac"]["unit"] == "dB"
