import json

import pytest
import torch

from vidgen.diffusion.toy2d import ToyConfig, coverage, knn_recall, make_toy, write_toy
from vidgen.render.writer import read_png_settings


pytestmark = pytest.mark.usefixtures("one_thread")


def test_toy_distribution_is_two_thin_trees():
    gmm, classes = make_toy(depth=6)
    assert set(classes.tolist()) == {0, 1}
    assert torch.allclose(gmm.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    # Thin branches: every component is longer than wide, the big ones much longer.
    ev = torch.linalg.eigvalsh(gmm.covs)
    assert bool((ev[:, 1] / ev[:, 0] > 5).all()) and (ev[:, 1] / ev[:, 0]).max() > 50
    x = gmm.subset(classes == 0).sample(4000, generator=torch.Generator().manual_seed(0))
    # Samples of a class score higher under their own class density than under the other's.
    assert (gmm.subset(classes == 0).log_prob(x) > gmm.subset(classes == 1).log_prob(x)).float().mean() > 0.7


def test_coverage_measures_reached_mass():
    real = torch.rand(500, 2)
    assert coverage(real, real.clone(), 1e-6) == 1.0
    half = real[real[:, 0] < 0.5]
    assert coverage(real, half, 0.01) == pytest.approx((real[:, 0] < 0.51).float().mean().item(), abs=0.03)
    assert knn_recall(real, real.clone()) == 1.0


@pytest.mark.slow
def test_autoguidance_beats_cfg_and_none_on_toy(tmp_path):
    report = write_toy(ToyConfig(), tmp_path)
    m = report["methods"]
    ag, cfg, none = m["autoguidance"], m["cfg"], m["none"]
    assert ag["mean_log_likelihood"] > cfg["mean_log_likelihood"]
    assert ag["mean_log_likelihood"] > none["mean_log_likelihood"]
    assert abs(ag["coverage"] - none["coverage"]) <= 0.05
    assert report["train_seconds"] < 300
    assert json.loads((tmp_path / "toy.json").read_text())["methods"] == m
    assert read_png_settings(tmp_path / "toy.png")["toy"]["methods"]["cfg"]["guidance"] == 2.0
