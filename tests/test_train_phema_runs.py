"""`vidgen phema`: post-hoc EMA for any family (here a tiny sg3 GAN run with ema.kind=power):
the reconstruction is a run folder that the family's own generate command reads."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidgen.cli import main
from vidgen.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")
SETS = ["engine.batch=4", "engine.steps=6", "engine.checkpoint_every=6", "engine.workers=0", "engine.device=cpu",
        "ema.kind=power", "ema.snapshot_every=1", "ema.sigma_rels=[0.05,0.1]", "engine.log_every=6"]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "sg3", "--config", "configs/sg3/tiny.yaml", "--data", "synthetic", "--out", str(out)]
                + [a for s in SETS for a in ("--set", s)]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
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
    from PIL import Image
    import numpy as np
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=np.int16) for n in ("a", "b"))
    assert a.shape == b.shape and np.abs(a - b).max() > 0


def test_phema_user_errors(gan_run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    no_snaps = tmp_path / "plain"
    assert main(["train", "sg3", "--config", "configs/sg3/tiny.yaml", "--data", "synthetic", "--out", str(no_snaps),
                 "--set", "engine.steps=1", "--set", "engine.batch=4", "--set", "engine.workers=0"]) == 0
    (plain,) = list(no_snaps.iterdir())
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
