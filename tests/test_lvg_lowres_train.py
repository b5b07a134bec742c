"""Low-res phase through the engine: one training step, resume, `vidgen generate`, dry run."""

from pathlib import Path

import av
import pytest
import torch

from vidgen.cli import main
from vidgen.config import load_config
from vidgen.data.synthetic import make_drive
from vidgen.lvg.recipe import LowResConfig, LowResRecipe
from vidgen.render.writer import read_settings
from vidgen.train.checkpoint import read_checkpoint
from vidgen.train.engine import train

ROOT = Path(__file__).resolve().parents[1]
MICRO = [
    "data.resolution=[18, 32]", "data.clip_len=16", "model.slack=8",
    "model.G.temporal_channels=[8, 8, 8, 8, 8, 8, 8]", "model.G.spatial_channels=[8, 8, 8, 4, 4]",
    "model.G.latent.noise_channels=2", "model.G.latent.num_filters=4", "model.G.latent.min_rate=20",
    "model.G.latent.max_rate=60", "model.G.latent.w_dim=8",
    "model.D.channels=[4, 8, 8, 8, 8]", "model.D.temporal_ksize=3", "model.D.head_channels=8",
    "model.D.head_convs=2", "loss.r1_interval=2", "engine.batch=2", "engine.workers=0",
    "engine.log_every=1", "engine.device=cpu", "ema.warmup_steps=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drive")
    make_drive(root, frames=40, size=(36, 64), videos=1)
    return root


def micro_config(drive: Path, out: Path, steps: int) -> LowResConfig:
    return load_config(LowResConfig, ROOT / "configs/lvg/lowres-tiny.yaml",
                       MICRO + [f"data.path={drive}", f"engine.out_dir={out}", f"engine.steps={steps}",
                                f"engine.checkpoint_every={2}"])


def test_one_training_step_changes_both_networks(drive):
    torch.manual_seed(0)
    cfg = micro_config(drive, Path("unused"), 1)
    recipe = LowResRecipe(cfg, torch.device("cpu"))
    batch = torch.stack([recipe.dataset()[0]] * 2)  # [2, 3, 16, 18, 32] real clips in [-1, 1]
    assert batch.shape == (2, 3, 16, 18, 32) and batch.min() >= -1 and batch.max() <= 1
    for phase in recipe.phases():
        opt = torch.optim.Adam([p for n in phase.trainable for p in recipe.networks()[n].parameters()], lr=1e-3)
        before = [p.detach().clone() for n in phase.trainable for p in recipe.networks()[n].parameters()]
        loss, stats = phase.loss(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss) and stats
        opt.zero_grad()
        loss.backward()
        opt.step()
        after = [p for n in phase.trainable for p in recipe.networks()[n].parameters()]
        assert any(not torch.equal(a, b) for a, b in zip(after, before)), phase.name


def test_train_resume_and_generate(drive, tmp_path):
    # 3 steps straight vs 2 steps, then resume for the third: identical weights.
    straight = train(LowResRecipe, micro_config(drive, tmp_path / "a", 3))
    first = train(LowResRecipe, micro_config(drive, tmp_path / "b", 2))
    resumed = train(LowResRecipe, micro_config(drive, tmp_path / "b", 3), resume=str(first))
    sa, sb = read_checkpoint(straight), read_checkpoint(resumed)
    assert sa.step == sb.step == 3 and sa.family == "lvg-lowres"
    for name in ("G", "D", "G_ema"):
        a, b = sa.network_state(name), sb.network_state(name)
        assert all(torch.equal(a[k], b[k]) for k in a), name

    out = tmp_path / "video.mp4"
    code = main(["generate", "--lowres", str(straight), "--frames", "40", "--seed", "3", "--window", "16",
                 "--out", str(out), "--fps", "10", "--device", "cpu"])
    assert code == 0
    with av.open(str(out)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 40 and frames[0].shape == (18, 32, 3)
    settings = read_settings(out)
    assert settings["seed"] == 3 and settings["frames"] == 40 and settings["lowres_step"] == 3

    assert main(["generate", "--lowres", str(straight), "--frames", "0", "--out", str(out)]) == 2
    assert main(["generate", "--lowres", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main(["generate", "--lowres", str(straight), "--save-lowres", "--out", str(out)]) == 2


def test_dry_run_prints_paper_parameter_counts(capsys):
    assert main(["train", "lvg-lowres", "--config", str(ROOT / "configs/lvg/lowres-paper.yaml"), "--dry-run"]) == 0
    counts = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in capsys.readouterr().out.splitlines()
              if line.strip().startswith(("G ", "D ", "G.latent "))}
    assert counts["G"] == pytest.approx(83.2e6, rel=0.01)
    assert counts["G.latent"] == pytest.approx(2.1e6, rel=0.01)  # the per-frame mapping MLP (1.1)
    assert counts["D"] == pytest.approx(46.4e6, rel=0.01)


def test_both_phases_resolve_from_the_recipe_module():
    from vidgen.registry import recipe_class

    assert recipe_class("lvg-lowres") is LowResRecipe
    assert recipe_class("lvg-superres").family == "lvg-superres"
