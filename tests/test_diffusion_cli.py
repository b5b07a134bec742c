import json

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main
from vidgen.diffusion.load import load_denoiser
from vidgen.render.writer import read_png_settings


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c, colour in enumerate(([200, 40, 40], [40, 40, 200])):
        folder = root / f"class{c}"
        folder.mkdir()
        for i in range(4):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained_run(image_classes, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["diffusion", "train", "--data", str(image_classes), "--config", "configs/diffusion/tiny.yaml",
                 "--out", str(out), "--set", "engine.steps=4", "--set", "engine.batch=4", "--set", "engine.workers=0",
                 "--set", "engine.checkpoint_every=4", "--set", "engine.sample_every=0", "--set", "ema.snapshot_every=1",
                 "--set", "data.resolution=8", "--set", "model.img_resolution=8", "--set", "data.class_from_folder=true",
                 "--set", "model.label_dim=2", "--set", "loss.label_dropout=0.2"])
    assert code == 0
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 1
    return runs[0]


def test_train_writes_checkpoint_and_snapshots(trained_run):
    assert (trained_run / "config.yaml").is_file()
    snaps = sorted((trained_run / "phema").glob("*.safetensors"))
    assert len(snaps) == 8  # 4 steps x 2 sigma_rels
    net, cfg = load_denoiser(trained_run)
    assert not net.training and cfg.model.label_dim == 2


def test_sample_cfg_interval_grid(trained_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["diffusion", "sample", "--net", str(trained_run), "--cfg", "--guidance", "2.0",
                 "--interval", "0.28,2.9", "--steps", "6", "--seeds", "0-3", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["nfe"] == 11 and 0 < report["guide_nfe"] < 11
    settings = read_png_settings(out)
    assert settings["guidance"] == 2.0 and settings["interval"] == [0.28, 2.9]


def test_cfg_needs_an_unconditional_model(image_classes, trained_run, tmp_path, capsys):
    """A net trained without label dropout has no unconditional mode: --cfg is refused unless a
    separate unconditional model is given with --guide."""
    out = tmp_path / "runs"
    assert main(["diffusion", "train", "--data", str(image_classes), "--config", "configs/diffusion/tiny.yaml",
                 "--out", str(out), "--set", "engine.steps=1", "--set", "engine.batch=2", "--set", "engine.workers=0",
                 "--set", "engine.checkpoint_every=1", "--set", "engine.sample_every=0", "--set", "data.resolution=8",
                 "--set", "model.img_resolution=8", "--set", "data.class_from_folder=true",
                 "--set", "model.label_dim=2"]) == 0
    no_dropout = next(out.iterdir())
    grid = str(tmp_path / "g.png")
    capsys.readouterr()
    assert main(["diffusion", "sample", "--net", str(no_dropout), "--cfg", "--guidance", "2", "--steps", "2",
                 "--seeds", "0", "--out", grid]) == 2
    assert "label dropout" in capsys.readouterr().err
    assert main(["diffusion", "sample", "--net", str(no_dropout), "--cfg", "--guide", str(trained_run),
                 "--guidance", "2", "--steps", "2", "--seeds", "0", "--out", grid]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["guide_nfe"] == 3


def test_sample_folder_is_reproducible_per_seed(trained_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["diffusion", "sample", "--net", str(trained_run), "--steps", "3", "--seeds", "0-2", "--out", str(a)]) == 0
    assert main(["diffusion", "sample", "--net", str(trained_run), "--steps", "3", "--seeds", "2", "--out", str(b)]) == 0
    same = np.asarray(Image.open(a / "seed000002.png")), np.asarray(Image.open(b / "seed000002.png"))
    assert np.array_equal(*same)


def test_phema_cli_reconstructs_loadable_net(trained_run, tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["diffusion", "phema", "--snapshots", str(trained_run / "phema"), "--sigma-rel", "0.07,0.15",
                 "--out", str(out)]) == 0
    files = sorted(out.glob("*.safetensors"))
    assert len(files) == 2
    net, _ = load_denoiser(files[0])
    x = net(torch.zeros(1, 3, 8, 8), 1.0, torch.tensor([0]))
    assert x.shape == (1, 3, 8, 8)
    # Autoguidance with a guide that differs only in its EMA length (a phema reconstruction).
    capsys.readouterr()
    assert main(["diffusion", "sample", "--net", str(files[0]), "--guide", str(files[1]), "--guidance", "2.0",
                 "--steps", "4", "--seeds", "0-1", "--out", str(tmp_path / "ag.png")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["nfe"] == 7 and report["guide_nfe"] == 7
    # Two noise-range experts (here two EMA lengths of one run), one per evaluation.
    assert main(["diffusion", "sample", "--net", f"{files[0]},{files[1]}", "--expert-boundaries", "1.0",
                 "--steps", "4", "--seeds", "0-1", "--out", str(tmp_path / "ex.png")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["nfe"] == 7
    assert main(["diffusion", "sample", "--net", str(files[0]), "--expert-boundaries", "1.0",
                 "--out", str(tmp_path / "ex.png")]) == 2
    assert "experts" in capsys.readouterr().err


def test_user_errors_are_reported(trained_run, tmp_path, capsys):
    assert main(["diffusion", "sample", "--net", str(tmp_path / "nope"), "--out", str(tmp_path / "g.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["diffusion", "sample", "--net", str(trained_run), "--interval", "3,1", "--out", str(tmp_path / "g.png")]) == 2
    assert main(["diffusion", "phema", "--snapshots", str(tmp_path), "--sigma-rel", "0.07", "--out", str(tmp_path / "o")]) == 2
    assert main(["diffusion", "phema", "--snapshots", str(trained_run / "phema"), "--sigma-rel", "0.5",
                 "--out", str(tmp_path / "o")]) == 2
    assert "0.5" in capsys.readouterr().err


def test_dry_run_counts_xs_preset(capsys):
    assert main(["diffusion", "train", "--config", "configs/diffusion/edm2-xs-img512.yaml", "--dry-run"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(line["millions"] - 124.7) / 124.7 < 0.01


def test_config_mismatches_name_the_keys(image_classes, tmp_path, capsys):
    base = ["diffusion", "train", "--data", str(image_classes), "--config", "configs/diffusion/tiny.yaml",
            "--out", str(tmp_path), "--set", "engine.steps=1", "--set", "engine.workers=0"]
    assert main(base + ["--set", "data.resolution=8"]) == 2  # model.img_resolution stays 32
    assert "model.img_resolution" in capsys.readouterr().err
    assert main(base + ["--set", "data.resolution=8", "--set", "model.img_resolution=8",
                        "--set", "data.class_from_folder=true", "--set", "model.label_dim=5"]) == 2
    assert "model.label_dim" in capsys.readouterr().err
    assert main(base + ["--set", "model.preset=huge"]) == 2
    assert "model.preset" in capsys.readouterr().err
