"""Every command answers a user error the same way: one line on stderr (``PROG: error: ...``),
exit status 2, no traceback, and nothing left behind.

Entry points: ``vidgen`` (vidgen.cli.main, also ``python -m vidgen``) and ``timelapse``
(timelapse.cli.main). Commands: vidgen train (toygan, lvg-lowres, lvg-superres), diffusion
train / sample / phema / toy, generate, eval, import, data synth / prepare / inspect;
timelapse train / render / invert / eval / inspect. Classes of bad input: config values (files and --set, in --dry-run and in a
real run), option values, devices, edited or diverged checkpoints, pickles where safetensors
belong, I/O errors while writing (disk full, read-only, forbidden; injected, and real through
a file-size limit), and warnings (one line, no source line).

The cases run in-process (``main([...])`` with capsys); one subprocess holds the file-size
limit. Tiny checkpoints are written at step 0 by the engine itself (no training).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import timelapse.cli
import vidgen.cli
from vidgen.config import dump_yaml, load_config
from vidgen.fileio import sha256_file
from vidgen.train import checkpoint as ckpt
from vidgen.train.dist import DistInfo

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
MAINS = {"vidgen": vidgen.cli.main, "timelapse": timelapse.cli.main}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: 'cuda' is a valid device here")
PROGRESS = re.compile(r"\d+%\||\d+/\d+ \[")  # tqdm bars


# --- tiny runs ---------------------------------------------------------------------------------
LVG = ["data.resolution=[18, 32]", "data.clip_len=16", "model.slack=8",
       "model.G.temporal_channels=[8, 8, 8, 8, 8, 8, 8]", "model.G.spatial_channels=[8, 8, 8, 4, 4]",
       "model.G.latent.noise_channels=2", "model.G.latent.num_filters=4", "model.G.latent.min_rate=20",
       "model.G.latent.max_rate=60", "model.G.latent.w_dim=8", "model.D.channels=[4, 8, 8, 8, 8]",
       "model.D.temporal_ksize=3", "model.D.head_channels=8", "model.D.head_convs=2", "engine.batch=2"]
DIFFUSION = ["data.resolution=8", "model.img_resolution=8", "engine.batch=2", "ema.snapshot_every=1"]
TIMELAPSE = ["model.resolution=16", "model.channel_base=256", "model.channel_max=32", "model.z_dim=16",
             "model.w_dim=16", "model.cond_mlp_layers=2", "engine.batch=4"]
SG3 = ["model.resolution=16", "model.channel_max=16", "model.num_layers=4", "engine.batch=4"]
TOY = ["engine.batch=4", "data.resolution=8", "model.channels=8", "model.z_dim=8", "data.num=16", "engine.steps=2",
       "engine.log_every=1"]
CPU = ["engine.workers=0", "engine.device=cpu"]


def _make_run(recipe_cls, preset, sets, out: Path) -> Path:
    """A run folder with one checkpoint at step 0, written by the engine (no training)."""
    from vidgen.train.engine import Trainer

    cfg = load_config(recipe_cls.config_class, preset, [*sets, *CPU])
    tr = Trainer(recipe_cls, cfg, DistInfo())
    run = ckpt.new_run_dir(out, tr.recipe.run_name())
    dump_yaml(cfg, run / "config.yaml")
    tr.save(run, recipe_cls.family)
    if recipe_cls.family == "diffusion":  # power-EMA snapshots for phema
        for step in (1, 2):
            tr.emas["net"].snapshot(step, 2 * step, run / "phema")
    return run


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    from timelapse.recipe import TimelapseRecipe
    from vidgen.data.synthetic import make_drive, make_timelapse
    from vidgen.diffusion.recipe import DiffusionRecipe
    from vidgen.lvg.recipe import LowResRecipe
    from vidgen.sg3.recipe import SG3Recipe
    from vidgen.train.toy import ToyGANRecipe

    root = tmp_path_factory.mktemp("cli_errors")
    make_timelapse(root / "frames", seed=1, size=(16, 16), days=40)
    make_drive(root / "drive", seed=0, frames=20, size=(18, 32), videos=2, fps=10)
    runs = root / "runs"
    return {
        "root": root, "frames": root / "frames", "drive": root / "drive",
        "lvg": _make_run(LowResRecipe, None, LVG, runs),
        "diffusion": _make_run(DiffusionRecipe, "configs/diffusion/tiny.yaml", DIFFUSION, runs),
        "timelapse": _make_run(TimelapseRecipe, "configs/timelapse/tiny.yaml",
                               [*TIMELAPSE, f"data.path={root / 'frames'}"], runs),
        "toygan": _make_run(ToyGANRecipe, None, TOY, runs),
        "sg3": _make_run(SG3Recipe, "configs/sg3/tiny.yaml", SG3, runs),
    }


# --- how an answer is judged -------------------------------------------------------------------
def run(entry: str, argv: list, capsys) -> tuple[int, str, list[str]]:
    code = MAINS[entry]([str(a) for a in argv])
    out, err = capsys.readouterr()
    # progress bars and a report's notes (e.g. a companion metric skipped) are not part of the answer
    lines = [s for s in re.split(r"[\r\n]", err) if s.strip() and not PROGRESS.search(s) and not s.startswith("note: ")]
    return code, out, lines


def one_line_error(entry: str, argv: list, capsys, *fragments: str) -> str:
    code, _, lines = run(entry, argv, capsys)
    assert code == 2, (code, lines)
    assert len(lines) == 1 and lines[0].startswith(f"{entry}") and ": error: " in lines[0], lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Everything under ``folder`` (relative paths), temporary names included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# --- config values, in --dry-run and in a real run ---------------------------------------------
TRAIN = {  # family -> (entry, argv before --out, learning-rate key)
    "toygan": ("vidgen", ["train", "toygan", "--data", "synthetic"], "model.lr_g"),
    "lvg-lowres": ("vidgen", ["train", "lvg-lowres", "--config", "configs/lvg/lowres-tiny.yaml", "--data", "{drive}"],
                   "loss.lr_g"),
    "lvg-superres": ("vidgen", ["train", "lvg-superres", "--config", "configs/lvg/superres-tiny.yaml",
                                "--data", "{drive}"], "loss.lr_g"),
    "diffusion": ("vidgen", ["diffusion", "train", "--config", "configs/diffusion/tiny.yaml", "--data", "{drive}"],
                  "optim.lr"),
    "timelapse": ("timelapse", ["train", "--config", "configs/timelapse/tiny.yaml", "--data", "{frames}"], "loss.lr"),
}
BAD_CONFIG = [
    (["engine.batch=0"], "'engine.batch': 0 is out of range (must be > 0)"),
    (["engine.batch=-8"], "'engine.batch': -8 is out of range"),
    (["engine.accum=0"], "'engine.accum': 0 is out of range"),
    (["engine.checkpoint_every=0"], "'engine.checkpoint_every': 0 is out of range"),
    (["engine.log_every=0"], "'engine.log_every': 0 is out of range"),
    (["engine.workers=-1"], "'engine.workers': -1 is out of range (must be >= 0)"),
    (["engine.steps=0"], "'engine.steps': 0 is out of range"),
    (["engine.keep_last=0"], "'engine.keep_last'"),
    (["engine.batch=6", "engine.accum=4"], "engine.batch=6 must be divisible by engine.accum=4"),
    (["engine.device=tpu"], "'engine.device': 'tpu' is not one of"),
    (["engine.precision=fp8"], "'engine.precision': 'fp8' is not one of"),
    (["engine.steps=ten"], "not a valid int"),
    (["engine.stesp=5"], "did you mean 'engine.steps'"),
    (["LR=-1e-3"], "-0.001 is out of range (must be > 0)"),
    (["LR=.nan"], "is not a finite number"),
    (["LR=.inf"], "is not a finite number"),
]


def _train_argv(family: str, fx, out: Path, sets: list[str], dry: bool) -> tuple[str, list]:
    entry, argv, lr = TRAIN[family]
    argv = [a.format(drive=fx["drive"], frames=fx["frames"]) for a in argv] + ["--out", out]
    for s in sets:
        argv += ["--set", s.replace("LR", lr)]
    return entry, argv + (["--dry-run"] if dry else [])


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("sets, message", BAD_CONFIG, ids=[" ".join(s) for s, _ in BAD_CONFIG])
@pytest.mark.parametrize("family", list(TRAIN))
def test_bad_config_values(fx, tmp_path, capsys, family, sets, message, dry):
    entry, argv = _train_argv(family, fx, tmp_path / "runs", sets, dry)
    one_line_error(entry, argv, capsys, message.replace("LR", TRAIN[family][2]))
    assert not (tmp_path / "runs").exists()


@NO_CUDA
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("family", list(TRAIN))
def test_cuda_on_a_cpu_build(fx, tmp_path, capsys, family, dry):
    entry, argv = _train_argv(family, fx, tmp_path / "runs", ["engine.device=cuda"], dry)
    one_line_error(entry, argv, capsys, "engine.device 'cuda': this torch has no CUDA device")
    assert not (tmp_path / "runs").exists()


def test_bad_values_in_a_config_file_name_the_file(fx, tmp_path, capsys):
    preset = tmp_path / "bad.yaml"
    preset.write_text("engine:\n  workers: -2\n")
    one_line_error("vidgen", ["train", "toygan", "--data", "synthetic", "--config", preset, "--dry-run"], capsys,
                   str(preset), "'engine.workers': -2 is out of range")


@pytest.mark.parametrize("family", list(TRAIN))
def test_scientific_notation_is_a_float(fx, tmp_path, capsys, family):
    entry, argv = _train_argv(family, fx, tmp_path / "runs", ["LR=1e-4"], dry=True)
    code, out, lines = run(entry, argv, capsys)
    assert code == 0, lines
    assert f"{TRAIN[family][2].split('.')[-1]}: 0.0001" in out


# --- option values and devices -----------------------------------------------------------------
GEN = ["generate", "--lowres", "{lvg}", "--out", "{out}/g.mp4"]
SAMPLE = ["diffusion", "sample", "--net", "{diffusion}", "--out", "{out}/s"]
RENDER = ["render", "sweep", "-c", "{timelapse}", "--factor", "day", "--out", "{out}/r.mp4"]
INVERT = ["invert", "-c", "{timelapse}", "--data", "{frames}", "--out", "{out}/lat.safetensors"]
SG3GEN = ["sg3", "generate", "--run", "{sg3}", "--seeds", "0-1", "--out", "{out}/grid.png"]
T2I = ["t2i", "--net", "{out}/no-run", "--prompt", "a red circle", "--out", "{out}/t.png"]
EVAL = ["eval", "--real", "{drive}", "--fake", "{drive}", "--metrics", "fid8_full", "--out", "{out}/e"]
OPTIONS = [  # (entry, argv, fragment of the message)
    ("vidgen", GEN + ["--frames", "0"], "argument --frames: must be at least 1, got '0'"),
    ("vidgen", GEN + ["--fps", "0"], "argument --fps: must be > 0"),
    ("vidgen", GEN + ["--fps", "nan"], "argument --fps: expected a finite number"),
    ("vidgen", GEN + ["--window", "0"], "argument --window"),
    ("vidgen", GEN + ["--start", "-1"], "argument --start: must be 0 or more"),
    ("vidgen", GEN + ["--device", "tpu"], "argument --device: 'tpu' is not a device"),
    ("vidgen", SAMPLE + ["--steps", "0"], "argument --steps"),
    ("vidgen", SAMPLE + ["--batch", "0"], "argument --batch"),
    ("vidgen", SAMPLE + ["--guidance", "nan"], "argument --guidance: expected a finite number"),
    ("vidgen", SAMPLE + ["--churn", "-1"], "argument --churn/--S-churn: must be >= 0"),
    ("vidgen", SAMPLE + ["--seeds", "a-b"], "--seeds 'a-b'"),
    ("vidgen", SAMPLE + ["--interval", "3,1"], "--interval '3,1'"),
    ("vidgen", SAMPLE + ["--device", "tpu"], "argument --device"),
    ("vidgen", ["diffusion", "phema", "--snapshots", "{diffusion}/phema", "--sigma-rel", "0.05", "--out", "{out}/p",
                "--step", "-1"], "argument --step"),
    ("vidgen", ["diffusion", "phema", "--snapshots", "{diffusion}/phema", "--sigma-rel", "wide", "--out", "{out}/p"],
     "--sigma-rel"),
    ("vidgen", ["diffusion", "phema", "--snapshots", "{diffusion}/phema", "--sigma-rel", "0.5", "--out", "{out}/p"],
     "--sigma-rel 0.5"),
    ("vidgen", ["diffusion", "toy", "--out", "{out}/t", "--guidance", "inf"], "argument --guidance"),
    ("vidgen", ["diffusion", "toy", "--out", "{out}/t", "--set", "main_iters=0.5"], "main_iters"),
    ("vidgen", SG3GEN + ["--psi", "nan"], "argument --psi: expected a finite number"),
    ("vidgen", SG3GEN + ["--rotate", "inf"], "argument --rotate"),
    ("vidgen", SG3GEN + ["--class", "-1"], "argument --class: must be 0 or more"),
    ("vidgen", SG3GEN + ["--cols", "0"], "argument --cols"),
    ("vidgen", SG3GEN + ["--frames", "0", "--interp"], "argument --frames"),
    ("vidgen", SG3GEN + ["--fps", "0"], "argument --fps"),
    ("vidgen", SG3GEN + ["--batch", "0"], "argument --batch"),
    ("vidgen", SG3GEN + ["--seeds", "x"], "--seeds 'x'"),
    ("vidgen", SG3GEN + ["--translate", "1"], "--translate"),
    ("vidgen", SG3GEN + ["--device", "tpu"], "argument --device"),
    ("vidgen", T2I + ["--batch", "0"], "argument --batch: must be at least 1"),
    ("vidgen", T2I + ["--device", "tpu"], "argument --device"),
    ("vidgen", T2I + ["--psi", "nan"], "--psi 'nan'"),
    ("vidgen", T2I + ["--psi", "0.7,x"], "--psi '0.7,x'"),
    ("vidgen", T2I + ["--seeds", "1-a"], "--seeds '1-a'"),
    ("vidgen", ["stylegan-t", "generate", *T2I[1:], "--noise", "loud"], "argument --noise: invalid choice"),
    ("vidgen", EVAL + ["--runs", "0"], "argument --runs"),
    ("vidgen", EVAL + ["--clip-batch", "0"], "argument --clip-batch"),
    ("vidgen", EVAL + ["--frame-batch", "-1"], "argument --frame-batch"),
    ("vidgen", EVAL + ["--device", "tpu"], "argument --device"),
    ("vidgen", ["data", "synth", "drive", "{out}/d", "--frames", "0"], "argument --frames"),
    ("vidgen", ["data", "prepare", "{drive}", "--out", "{out}/ds", "--fps", "0"], "--fps 0.0"),
    ("vidgen", ["data", "prepare", "{drive}", "--out", "{out}/ds", "--resolution", "0x0"], "resolution '0x0'"),
    ("vidgen", ["data", "prepare", "{drive}", "--out", "{out}/ds", "--workers", "-1"], "--workers -1"),
    ("vidgen", ["data", "inspect", "{out}/missing"], "no such file or folder"),
    ("vidgen", ["data", "synth", "timelapse", "{out}/d", "--days", "-1"], "argument --days"),
    ("vidgen", ["train", "nosuchfamily"], "argument FAMILY: invalid choice"),
    ("vidgen", ["generate", "--out", "{out}/g.mp4"], "the following arguments are required: --lowres"),
    ("timelapse", ["render", "stabilize", "-c", "{timelapse}", "--dates", "2021-01-01..2021-01-05", "--every", "0d",
                   "--out", "{out}/r.mp4"], "--every '0d': the step between dates must be at least one second"),
    ("timelapse", RENDER + ["--hour", "nan"], "argument --hour: expected a finite number"),
    ("timelapse", RENDER + ["--hour", "25"], "argument --hour: must be an hour of the day"),
    ("timelapse", RENDER + ["--chunk", "0"], "argument --chunk"),
    ("timelapse", RENDER + ["--frames", "0"], "argument --frames: must be at least 1"),
    ("timelapse", RENDER + ["--frames", "-5"], "argument --frames: must be at least 1, got '-5'"),
    ("timelapse", RENDER + ["--fps", "0"], "argument --fps"),
    ("timelapse", RENDER + ["--psi", "inf"], "argument --psi"),
    ("timelapse", RENDER + ["--device", "tpu"], "argument --device"),
    ("timelapse", ["render", "grid", "-c", "{timelapse}", "--factor", "day", "--out", "{out}/g.mp4"], "give a .png path"),
    ("timelapse", INVERT + ["--steps", "0"], "argument --steps"),
    ("timelapse", INVERT + ["--lr", "-1"], "argument --lr"),
    ("timelapse", INVERT + ["--device", "tpu"], "argument --device"),
    ("timelapse", ["eval", "-c", "{timelapse}", "--ratios", "-1"], "argument --ratios"),
    ("timelapse", ["eval", "-c", "{timelapse}", "--fid", "-1"], "argument --fid"),
    ("timelapse", ["eval", "-c", "{timelapse}", "--device", "tpu"], "argument --device"),
    ("timelapse", ["inspect", "--data", "{frames}", "--resolution", "0"], "argument --resolution"),
    ("timelapse", ["nosuchcommand"], "invalid choice"),
]
CUDA_OPTIONS = [("vidgen", GEN), ("vidgen", SAMPLE), ("vidgen", SG3GEN), ("vidgen", EVAL), ("timelapse", RENDER), ("timelapse", INVERT),
                ("timelapse", ["eval", "-c", "{timelapse}"])]


def _fill(argv: list[str], fx, out: Path) -> list[str]:
    keys = {k: v for k, v in fx.items() if isinstance(v, Path)}
    return [a.format(out=out, **keys) for a in argv]


@pytest.mark.parametrize("entry, argv, message", OPTIONS, ids=[" ".join(a[:3] + a[-2:]) for _, a, _ in OPTIONS])
def test_bad_option_values(fx, tmp_path, capsys, entry, argv, message):
    out = tmp_path / "out"
    one_line_error(entry, _fill(argv, fx, out), capsys, message)
    assert leftovers(out) == []


@NO_CUDA
@pytest.mark.parametrize("entry, argv", CUDA_OPTIONS, ids=[" ".join(a[:2]) for _, a in CUDA_OPTIONS])
def test_device_cuda_on_a_cpu_build(fx, tmp_path, capsys, entry, argv):
    out = tmp_path / "out"
    one_line_error(entry, _fill(argv, fx, out) + ["--device", "cuda"], capsys,
                   "argument --device: 'cuda': this torch has no CUDA device")
    assert leftovers(out) == []


# --- checkpoints: edited sidecars, other shapes, non-finite weights, pickles --------------------
LOADERS = {  # family -> (entry, argv)
    "generate": ("lvg", "vidgen", ["generate", "--lowres", "{run}", "--frames", "2", "--window", "2",
                                   "--out", "{out}/g.mp4"]),
    "sample": ("diffusion", "vidgen", ["diffusion", "sample", "--net", "{run}", "--steps", "2", "--seeds", "0-1",
                                       "--out", "{out}/s"]),
    "render": ("timelapse", "timelapse", ["render", "sweep", "-c", "{run}", "--factor", "day", "--frames", "2",
                                          "--out", "{out}/r.mp4"]),
    "timelapse eval": ("timelapse", "timelapse", ["eval", "-c", "{run}", "--ratios", "2", "--out", "{out}/e.json"]),
    "eval": ("lvg", "vidgen", ["eval", "--real", "{drive}", "--fake", "{run}/checkpoints/step-000000000/state.json",
                               "--metrics", "fvd4_16f", "--detector", "i3d=random:8", "--out", "{out}/e"]),
    "sg3 generate": ("sg3", "vidgen", ["sg3", "generate", "--run", "{run}", "--seeds", "0-1", "--out", "{out}/g.png"]),
    "train resume": ("toygan", "vidgen", ["train", "toygan", "--data", "synthetic", "--resume", "{run}",
                                          "--out", "{out}/runs"] + [a for s in TOY + CPU for a in ("--set", s)]),
}
WIDER = {"lvg": ("model", "G", "spatial_channels", [8, 8, 8, 8, 8]), "diffusion": ("model", "model_channels", 64),
         "timelapse": ("model", "channel_max", 16), "sg3": ("model", "channel_max", 32)}


def _set(d: dict, path: tuple):
    *keys, last, value = path
    for k in keys:
        d = d[k]
    d[last] = value


def _edit_state(folder: Path, edit) -> None:
    state = json.loads((folder / "state.json").read_text())
    edit(state)
    state["checksum"] = ckpt._body_checksum(state)  # recomputed: the file passes its own check
    (folder / "state.json").write_text(json.dumps(state))


def _poison(folder: Path) -> None:
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(folder / "networks.safetensors"))
    for k, t in tensors.items():
        if t.is_floating_point() and t.numel() > 1:
            t.view(-1)[0] = float("nan")
    f = folder / "networks.safetensors"
    save_file(tensors, str(f), metadata={"format": ckpt.FORMAT})
    _edit_state(folder, lambda s: s["files"][f.name].update(sha256=sha256_file(f), bytes=f.stat().st_size))


EDITS = {
    "no files": (lambda s, fam: s.pop("files"), "'files' must be"),
    "step text": (lambda s, fam: s.update(step="abc"), "'step' must be a non-negative integer, not 'abc'"),
    "networks text": (lambda s, fam: s.update(networks="G"), "'networks' must be"),
    "wider net": (lambda s, fam: _set(s["config"], WIDER[fam]), "weights do not fit the network its config describes"),
    "nan weights": (None, "non-finite weights"),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_damaged_checkpoints(fx, tmp_path, capsys, loader, edit):
    family, entry, argv = LOADERS[loader]
    if edit == "wider net" and family not in WIDER:
        pytest.skip("resuming fits the current config's networks; a changed config is reported (test_train_runs)")
    run_dir = tmp_path / fx[family].name
    shutil.copytree(fx[family], run_dir)
    folder = ckpt.list_checkpoints(run_dir)[-1]
    change, message = EDITS[edit]
    _poison(folder) if change is None else _edit_state(folder, lambda s: change(s, family))
    before = leftovers(run_dir)
    out = tmp_path / "out"
    line = one_line_error(entry, _fill(argv, {**fx, "run": run_dir}, out), capsys, message)
    assert str(folder) in line or str(run_dir) in line
    if edit == "nan weights":
        assert "--allow-nonfinite" in line
    assert leftovers(out) == [] and leftovers(run_dir) == before


@pytest.mark.parametrize("loader", ["generate", "sample"])
def test_allow_nonfinite_loads_a_diverged_checkpoint(fx, tmp_path, capsys, loader):
    family, entry, argv = LOADERS[loader]
    run_dir = tmp_path / fx[family].name
    shutil.copytree(fx[family], run_dir)
    _poison(ckpt.list_checkpoints(run_dir)[-1])
    code, _, lines = run(entry, _fill(argv, {**fx, "run": run_dir}, tmp_path / "out") + ["--allow-nonfinite"], capsys)
    assert code == 0, lines


@pytest.fixture
def pickled(tmp_path) -> Path:
    """A pickle named like a safetensors file. It is written, never loaded."""
    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    return path


def test_pickles_where_safetensors_belong(fx, tmp_path, capsys, pickled):
    out = tmp_path / "out"
    one_line_error("vidgen", ["diffusion", "sample", "--net", pickled, "--out", out / "s"], capsys,
                   f"{pickled} is not a safetensors file")
    one_line_error("timelapse", ["render", "real", "-c", fx["timelapse"], "--latents", pickled, "--out", out / "r.mp4"],
                   capsys, f"{pickled} is not a safetensors file")
    snaps = tmp_path / "phema"
    shutil.copytree(fx["diffusion"] / "phema", snaps)
    shutil.copy(pickled, snaps / "net-000000003-s0.0500.safetensors")
    one_line_error("vidgen", ["diffusion", "phema", "--snapshots", snaps, "--sigma-rel", "0.05", "--out", out / "p"],
                   capsys, "net-000000003-s0.0500.safetensors is not a safetensors file")
    pt = tmp_path / "weights.pt"
    shutil.copy(pickled, pt)
    one_line_error("vidgen", ["generate", "--lowres", pt, "--out", out / "g.mp4"], capsys, "is a pickle")
    one_line_error("vidgen", ["train", "toygan", "--data", "synthetic", "--resume", pt, "--out", out / "runs"],
                   capsys, "is a pickle")
    assert leftovers(out) == []


def test_import_of_files_that_are_not_published_checkpoints(tmp_path, capsys):
    (tmp_path / "text.pkl").write_text("not a pickle")
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    out = tmp_path / "run"
    one_line_error("vidgen", ["import", tmp_path / "missing.pkl", "--out", out], capsys, "missing.pkl does not exist")
    one_line_error("vidgen", ["import", tmp_path / "text.pkl", "--out", out], capsys, "is not a pickle")
    one_line_error("vidgen", ["import", tmp_path / "dict.pkl", "--out", out], capsys, "no model family recognises")
    one_line_error("vidgen", ["import", tmp_path / "dict.pkl", "--out", out, "--family", "nosuch"], capsys,
                   "argument --family: invalid choice")
    assert not out.exists()


# --- I/O errors while writing ------------------------------------------------------------------
ERRNOS = [errno.ENOSPC, errno.EROFS, errno.EACCES]


def _fail_on(n: int, err: int, path_of):
    """A wrapper that lets the first ``n - 1`` calls through, then raises OSError(err)."""
    def wrap(real):
        calls = {"n": 0}

        def fn(*args, **kw):
            calls["n"] += 1
            if calls["n"] >= n:
                raise OSError(err, os.strerror(err), str(path_of(*args, **kw)))
            return real(*args, **kw)
        return fn
    return wrap


def _inject(monkeypatch, command: str, err: int) -> None:
    from vidgen.diffusion import phema
    from vidgen.metrics import report
    from vidgen.render import writer
    from vidgen.train.log import TrainLogger

    if command in ("generate", "render"):  # the second chunk of frames fails: the first is already on disk
        real = writer.VideoWriter.append
        monkeypatch.setattr(writer.VideoWriter, "append", _fail_on(2, err, lambda self, *a, **k: self._tmp)(real))
    elif command == "sample":  # the second image fails
        monkeypatch.setattr(writer, "save_png", _fail_on(2, err, lambda path, *a, **k: path)(writer.save_png))
    elif command == "phema":
        monkeypatch.setattr(phema, "write_reconstruction",
                            _fail_on(2, err, lambda path, *a, **k: path)(phema.write_reconstruction))
    elif command == "eval":  # report.json written, report.md fails
        monkeypatch.setattr(report, "write_bytes", _fail_on(2, err, lambda path, *a, **k: path)(report.write_bytes))
    elif command == "timelapse eval":
        monkeypatch.setattr(timelapse.cli, "write_json", _fail_on(1, err, lambda path, *a, **k: path)(timelapse.cli.write_json))
    elif command == "train":
        monkeypatch.setattr(TrainLogger, "tick", _fail_on(2, err, lambda self, *a: self.run_dir / "stats.jsonl")(
            TrainLogger.tick))


WRITERS = {  # command -> (entry, argv, the output named in the message, what the message says was kept)
    "generate": ("vidgen", ["generate", "--lowres", "{lvg}", "--frames", "4", "--window", "2", "--out", "{out}/g.mp4"],
                 "{out}/g.mp4", "nothing was written"),
    "render": ("timelapse", ["render", "sweep", "-c", "{timelapse}", "--factor", "day", "--frames", "4", "--chunk", "2",
                             "--out", "{out}/r.mp4"], "{out}/r.mp4", "nothing was written"),
    "sample": ("vidgen", ["diffusion", "sample", "--net", "{diffusion}", "--steps", "2", "--seeds", "0-2",
                          "--out", "{out}/s"], "{out}/s", "no image was added there"),
    "phema": ("vidgen", ["diffusion", "phema", "--snapshots", "{diffusion}/phema", "--sigma-rel", "0.05,0.07",
                         "--out", "{out}/p"], "{out}/p", "no reconstruction was added there"),
    "eval": ("vidgen", ["eval", "--real", "{drive}", "--fake", "{drive}", "--metrics", "fid8_full", "--detector",
                        "inception=random:8", "--no-cache", "--quiet", "--out", "{out}/e"], "{out}/e",
             "the metrics are printed above"),
    "timelapse eval": ("timelapse", ["eval", "-c", "{timelapse}", "--ratios", "2", "--out", "{out}/e.json"],
                       "{out}/e.json", "the report is printed above"),
    "train": ("vidgen", ["train", "toygan", "--data", "synthetic", "--out", "{out}/runs"]
              + [a for s in TOY + CPU + ["engine.steps=3"] for a in ("--set", s)], "{out}/runs",
              "no checkpoint of"),
}


@pytest.mark.parametrize("err", ERRNOS, ids=[errno.errorcode[e] for e in ERRNOS])
@pytest.mark.parametrize("command", list(WRITERS))
def test_io_errors_while_writing(fx, tmp_path, capsys, monkeypatch, command, err):
    entry, argv, target, kept = WRITERS[command]
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a file of the user's")
    _inject(monkeypatch, command, err)
    line = one_line_error(entry, _fill(argv, fx, out), capsys, os.strerror(err), kept)
    assert _fill([target], fx, out)[0] in line
    left = leftovers(out)
    if command == "train":  # a run folder that resumes in place; stats up to the failed tick, lock released
        (run_dir,) = (out / "runs").iterdir()  # the lock beside it is gone
        assert "training stopped at step 2" in line and run_dir.is_dir()
        left = [p for p in left if not p.startswith("runs")]
    assert left == ["mine.txt"], left  # no partial output, no temporary file


def test_an_existing_output_folder_keeps_its_files_when_a_sample_set_fails(fx, tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    out.mkdir()
    (out / "old.png").write_bytes(b"not ours")
    _inject(monkeypatch, "sample", errno.ENOSPC)
    one_line_error("vidgen", ["diffusion", "sample", "--net", fx["diffusion"], "--steps", "2", "--seeds", "0-2",
                              "--out", out], capsys, "No space left on device")
    assert leftovers(out) == ["old.png"]
    monkeypatch.undo()
    code, _, lines = run("vidgen", ["diffusion", "sample", "--net", fx["diffusion"], "--steps", "2", "--seeds", "0-2",
                                    "--out", out], capsys)
    assert code == 0 and leftovers(out) == ["old.png", "seed000000.png", "seed000001.png", "seed000002.png"], lines


LIMITED = r"""
import contextlib, io, json, resource, signal, sys
from vidgen.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
results = []
for limit, argv in json.loads(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_real_write_failures_past_a_file_size_limit(fx, tmp_path):
    """Files really fail to grow (EFBIG, as a full disk fails them), in every writer: PyAV's
    encoder, PNG, safetensors' own writer, the engine's stats and checkpoints."""
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (1500, ["generate", "--lowres", fx["lvg"], "--frames", "32", "--window", "8", "--out", out / "g.mp4"]),
        (100, ["diffusion", "sample", "--net", fx["diffusion"], "--steps", "2", "--seeds", "0-3", "--out", out / "s"]),
        (2000, ["diffusion", "phema", "--snapshots", fx["diffusion"] / "phema", "--sigma-rel", "0.05",
                "--out", out / "p"]),
        (8000, ["train", "toygan", "--data", "synthetic", "--out", out / "runs"]
         + [a for s in TOY + CPU for a in ("--set", s)]),
    ]
    done = subprocess.run([sys.executable, "-c", LIMITED, json.dumps([[n, [str(a) for a in argv]] for n, argv in cases])],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (limit, argv), (code, err) in zip(cases, results):
        lines = [s for s in re.split(r"[\r\n]", err) if s.strip() and not PROGRESS.search(s)]
        assert code == 2 and len(lines) == 1 and "File too large" in lines[0], (argv[0], lines)
    left = leftovers(out)
    assert not [p for p in left if not p.startswith("runs")], left  # no partial video, image set or file
    (run_dir,) = (out / "runs").iterdir()  # the run stopped at its checkpoint: the folder resumes in place
    assert ckpt.list_checkpoints(run_dir) == [] and not list(run_dir.glob("checkpoints/.*"))


# --- warnings -----------------------------------------------------------------------------------
def test_warnings_are_one_line_without_source(fx, tmp_path, capsys):
    run_dir = tmp_path / fx["toygan"].name
    shutil.copytree(fx["toygan"], run_dir)
    good = ckpt.list_checkpoints(run_dir)[-1]
    bad = good.with_name("step-000000001")
    shutil.copytree(good, bad)
    (bad / "train.safetensors").write_bytes(b"damaged")
    argv = ["train", "toygan", "--data", "synthetic", "--resume", run_dir, "--out", tmp_path / "runs"]
    argv += [a for s in TOY + CPU for a in ("--set", s)]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, _, lines = run("vidgen", argv, capsys)
    assert code == 0, lines
    warned = [line for line in lines if line.startswith("vidgen: warning: ")]
    assert len(warned) == 1 and "skipping bad checkpoint" in warned[0] and "step-000000001" in warned[0], lines
    assert not any(".py:" in line or line.startswith(" ") or "warnings.warn" in line for line in lines), lines
