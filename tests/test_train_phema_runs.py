"""`vidgen phema`: post-hoc EMA for any family (tiny sg3, lvg-lowres and time-lapse GAN runs
with ema.kind=power): the reconstruction is a run folder that the family's own generate or
render command reads."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tiny_families import FAMILIES

from timelapse.cli import main as tl_main
from vidgen.cli import main
from vidgen.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")
SETS = ["engine.steps=6", "engine.checkpoint_every=6", "engine.workers=0", "engine.device=cpu",
        "ema.kind=power", "ema.snapshot_every=1", "ema.sigma_rels=[0.05,0.1]", "engine.log_every=6"]


def _train(family: str, out: Path, data_root: Path, sets: list[str]) -> Path:
    config, family_sets, maker, _ = FAMILIES[family]
    data = "synthetic"
    if maker != "synthetic":
        data_root.mkdir(parents=True)
        maker(data_root)
        data = str(data_root)
    argv = ["train", family, "--config", config, "--data", data, "--out", str(out)]
    assert main(argv + [a for s in family_sets + sets for a in ("--set", s)]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sg3")
    run = _train("sg3", base / "runs", base / "data", SETS)
    assert len(list((run / "phema").glob("G-*.safetensors"))) == 12  # 6 steps x 2 widths
    return run


def _g_ema(run: Path) -> dict:
    nets = load_file(str(ckpt.read_checkpoint(run).path / "networks.safetensors"))
    return {k: v for k, v in nets.items() if k.startswith("G_ema/")}


def test_phema_run_reconstructs_and_generates(gan_run, tmp_path, capsys):
    out = tmp_path / "phema"
    assert main(["phema", "--run", str(gan_run), "--sigma-rel", "0.05,0.08", "--out", str(out)]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [(r["network"], r["step"], r["sigma_rel"]) for r in lines] == [("G", 6, 0.05), ("G", 6, 0.08)]
    tracked, again, other = _g_ema(gan_run), _g_ema(out / "s0.0500"), _g_ema(out / "s0.0800")
    G = {k: v for k, v in load_file(str(ckpt.read_checkpoint(gan_run).path / "networks.safetensors")).items()
         if k.startswith("G/")}
    buffers = [k for k in tracked if k.endswith(("magnitude_ema", "w_avg"))]
    params = [k for k in tracked if tracked[k].is_floating_point() and k not in buffers]
    assert buffers and all(torch.equal(tracked[k], other[k]) for k in buffers)  # copied like the EMA does
    # a tracked width comes back as the tracked average; a new width is a different average
    assert max((tracked[k] - again[k]).abs().max().item() for k in params) < 1e-5
    assert max((tracked[k] - G["G/" + k[6:]]).abs().max().item() for k in params) > 1e-4  # EMA is not G
    assert max((tracked[k] - other[k]).abs().max().item() for k in params) > 1e-6
    state = ckpt.read_checkpoint(out / "s0.0800").state
    assert state["family"] == "sg3" and state["phema"]["sigma_rel"] == 0.08 and state["phema"]["step"] == 6
    # the family's own generate command reads it, and draws with the reconstructed weights
    for name, run in (("a", gan_run), ("b", out / "s0.0800")):
        assert main(["sg3", "generate", "--run", str(run), "--seeds", "0-1", "--out", str(tmp_path / f"{name}.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=np.int16) for n in ("a", "b"))
    assert a.shape == b.shape and np.abs(a - b).max() > 0


def test_phema_user_errors(gan_run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    plain = _train("sg3", tmp_path / "plain", tmp_path / "data", ["engine.steps=1", "engine.workers=0"])
    capsys.readouterr()
    cases = [(["--run", str(gan_run), "--sigma-rel", "0.05", "--out", str(taken)], "not empty"),
             (["--run", str(gan_run), "--sigma-rel", "0.5", "--out", str(tmp_path / "x")], "sigma_rel"),
             (["--run", str(gan_run), "--sigma-rel", "abc", "--out", str(tmp_path / "x")], "--sigma-rel"),
             (["--run", str(plain), "--sigma-rel", "0.05", "--out", str(tmp_path / "x")], "ema.kind=power")]
    for args, words in cases:
        assert main(["phema"] + args) == 2
        err = capsys.readouterr().err
        assert err.startswith("vidgen: error:") and words in err and err.count("\n") == 1, err
    assert (taken / "keep.txt").read_text() == "mine" and not (tmp_path / "x").exists()


@pytest.mark.parametrize("family", ["lvg-lowres", "timelapse"])
def test_phema_other_gan_families(family, tmp_path, capsys):
    # lvg-lowres keeps magnitude EMAs, the time-lapse G w_avg: both copied, as the EMA does
    run = _train(family, tmp_path / "runs", tmp_path / "data", SETS)
    capsys.readouterr()
    out = tmp_path / "phema"
    assert main(["phema", "--run", str(run), "--sigma-rel", "0.05,0.08", "--out", str(out)]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [(r["network"], r["step"], r["sigma_rel"]) for r in lines] == [("G", 6, 0.05), ("G", 6, 0.08)]
    tracked, again, other = _g_ema(run), _g_ema(out / "s0.0500"), _g_ema(out / "s0.0800")
    params = [k for k in tracked if tracked[k].is_floating_point() and "magnitude" not in k and "w_avg" not in k]
    assert params and max((tracked[k] - again[k]).abs().max().item() for k in params) < 1e-5
    assert max((tracked[k] - other[k]).abs().max().item() for k in params) > 1e-6
    assert ckpt.read_checkpoint(out / "s0.0800").state["family"] == family
    if family == "lvg-lowres":
        argv = ["generate", "--lowres", str(out / "s0.0800"), "--frames", "4", "--out", str(tmp_path / "v.mp4")]
        assert main(argv) == 0 and (tmp_path / "v.mp4").stat().st_size > 0
    else:
        argv = ["render", "sweep", "-c", str(out / "s0.0800"), "--factor", "day", "--frames", "3",
                "--out", str(tmp_path / "day.mp4")]
        assert tl_main(argv) == 0 and (tmp_path / "day.mp4").stat().st_size > 0
