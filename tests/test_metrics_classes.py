"""The ImageNet-classes study (Kynkaanniemi et al. 2023): the gradient and per-image influence
of FID, Grad-CAM heatmaps, class-histogram matching, and both in `vidgen eval` with a tiny
detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.metrics.class_match import largest_remainder, match_histogram
from vidgen.metrics.detectors import RandomDetector
from vidgen.metrics.evaluate import EvalOptions, evaluate
from vidgen.metrics.frechet import FeatureStats, frechet_from_stats
from vidgen.metrics.inputs import ArrayVideo, FakeVideos, RealVideos
from vidgen.metrics.sensitivity import FIDGradient, grad_cam

pytestmark = pytest.mark.usefixtures("one_thread")


def _stats(x: np.ndarray, w: np.ndarray | None = None) -> FeatureStats:
    s = FeatureStats(x.shape[1])
    s.add(torch.from_numpy(x), None if w is None else torch.from_numpy(w))
    return s


def _sets(n_real=80, n_fake=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n_real, d)) @ rng.normal(size=(d, d)) * 0.5
    fake = rng.normal(size=(n_fake, d)) @ rng.normal(size=(d, d)) * 0.4 + 0.3
    return real, fake


@pytest.mark.parametrize("unbiased", [False, True])
def test_feature_gradient_of_fid_matches_finite_differences(unbiased):
    real, fake = _sets()
    r = _stats(real)
    grad = FIDGradient.at(r, _stats(fake), unbiased).feature_grad(fake)
    eps = 1e-5
    for i, k in [(0, 0), (3, 2), (17, 4), (59, 1)]:
        up, down = fake.copy(), fake.copy()
        up[i, k] += eps
        down[i, k] -= eps
        fd = (frechet_from_stats(r, _stats(up), unbiased=unbiased)
              - frechet_from_stats(r, _stats(down), unbiased=unbiased)) / (2 * eps)
        assert grad[i, k] == pytest.approx(fd, rel=1e-4, abs=1e-8), (i, k)
    assert np.abs(grad).std() > 1e-3  # the gradients differ between images


def test_influence_is_the_weight_derivative_and_predicts_leaving_one_out():
    real, fake = _sets(n_real=500, n_fake=400, d=4, seed=1)
    r, f = _stats(real), _stats(fake)
    u = FIDGradient.at(r, f).influence(fake)
    assert abs(u.sum()) < 1e-9 * np.abs(u).sum()  # influences sum to zero
    eps = 1e-5
    for i in (0, 7, 123):
        w_up, w_down = np.ones(len(fake)), np.ones(len(fake))
        w_up[i] += eps
        w_down[i] -= eps
        fd = (frechet_from_stats(r, _stats(fake, w_up)) - frechet_from_stats(r, _stats(fake, w_down))) / (2 * eps)
        assert u[i] == pytest.approx(fd, rel=1e-4, abs=1e-9)
    base = frechet_from_stats(r, f)
    loo = np.array([frechet_from_stats(r, _stats(np.delete(fake, i, axis=0))) - base for i in range(0, 400, 8)])
    pred = -u[::8]
    assert np.corrcoef(loo, pred)[0, 1] > 0.99 and np.abs(loo - pred).max() < 0.05 * np.abs(loo).max()


def test_grad_cam_follows_gradient_weighted_activations():
    spatial = torch.zeros(1, 3, 4, 4)
    spatial[0, 0, 1, 2] = 2.0   # channel 0 active in one cell
    spatial[0, 1, 3, 0] = 5.0   # channel 1 active elsewhere, but FID's gradient on it is negative
    heat = grad_cam(spatial, torch.tensor([[1.0, -1.0, 0.3]]), (8, 8))
    assert heat.shape == (1, 8, 8) and float(heat.min()) >= 0 and float(heat.max()) <= 1
    assert heat[0, 2:4, 4:6].mean() > 0.5 and float(heat[0, 6:, :2].max()) == 0  # ReLU removes the negative cell


def test_histogram_matching_resamples_without_changing_images():
    assert largest_remainder(np.array([1, 1, 1.0]), 10).tolist() == [4, 3, 3]
    fake_classes = np.array([0] * 90 + [1] * 10)
    real_hist = np.array([5.0, 5.0, 0.0, 1.0])  # class 3 has no generated image
    m = match_histogram(fake_classes, real_hist, 100, seed=0)
    assert len(m.indices) == 100 and set(m.indices) <= set(range(100))
    counts = np.bincount(fake_classes[m.indices], minlength=4)
    assert counts.tolist() == [50, 50, 0, 0]
    assert m.matched_mass == pytest.approx(10 / 11) and m.max_repeat >= 2
    assert m.real_classes == 3 and m.fake_classes == 2
    with pytest.raises(VidgenError, match="cannot be matched"):
        match_histogram(np.array([2, 2]), real_hist, 2, seed=0)


def _frames(kind: str, n: int, seed: int) -> np.ndarray:
    """Grey noise frames tinted red ('a') or blue ('b'), symmetrically around grey."""
    rng = np.random.default_rng(seed)
    x = rng.integers(88, 168, (n, 16, 16, 3))
    tint = 70 if kind == "a" else -70
    x[..., 0] += tint
    x[..., 2] -= tint
    return x.astype(np.uint8)


def _image_generator(share_b: float):
    def generate(seed, n):
        return np.concatenate([_frames("b" if (s * 0.618) % 1 < share_b else "a", 1, s) for s in range(seed, seed + n)])
    return generate


def test_class_matched_fid_flags_a_class_driven_fid(tmp_path):
    det = RandomDetector(8, num_classes=10)
    a, b = _frames("a", 40, 1), _frames("b", 40, 2)
    cls = det.classify(det(torch.from_numpy(np.concatenate([a, b])).permute(0, 3, 1, 2).contiguous())).argmax(1)
    assert set(cls[:40].tolist()).isdisjoint(cls[40:].tolist())  # the two kinds get different top-1 classes
    real = RealVideos([ArrayVideo(a), ArrayVideo(b)], "two-kinds")  # each video weighs 1: half and half
    opts = EvalOptions(["fid200_full", "fid_class_matched_200"], detectors={"inception": det},
                       stats_dir=tmp_path, progress=False, companions=False)
    skewed = evaluate(real, FakeVideos("callable", "skewed", generate=_image_generator(0.1), content="image"), opts)
    e = skewed["metrics"]["fid_class_matched_200"]
    assert e["fid_before"][0] == pytest.approx(skewed["metrics"]["fid200_full"]["value"])
    assert e["drop"][0] > 0.5 and e["flagged"] and e["verdict"] == "FID driven by ImageNet-class statistics"
    assert e["matched_mass"] == [pytest.approx(1.0)] and e["max_repeat"][0] >= 3
    balanced = evaluate(real, FakeVideos("callable", "balanced", generate=_image_generator(0.5), content="image"), opts)
    e = balanced["metrics"]["fid_class_matched_200"]
    assert e["drop"][0] < 0.1 and not e["flagged"]


def test_eval_writes_a_heatmap_report_and_class_matched_fid(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from vidgen.cli import main

    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    for name, share_b in (("real", 0.5), ("fake", 0.2)):
        folder = tmp_path / name
        folder.mkdir()
        for s in range(40):
            Image.fromarray(_image_generator(share_b)(s + (0 if name == "real" else 1000), 1)[0]).save(
                folder / f"{s:03d}.png")
    out = tmp_path / "eval"
    code = main(["eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--metrics",
                 "fid40_full,fid_class_matched_40", "--fid-heatmaps", "3", "--out", str(out), "--quiet",
                 "--detector", "inception=random:8"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["fake"]["content"] == "image" and "_images" not in rep
    h = rep["fid_heatmaps"]
    assert h["metric"] == "fid40_full" and h["num_generated"] == 40 and len(h["images"]) == 3
    infl = [abs(e["influence"]) for e in h["images"]]
    assert infl == sorted(infl, reverse=True) and infl[0] > 0
    assert abs(h["influence_sum"]) < 1e-9 * (1 + infl[0])
    png = np.asarray(Image.open(out / h["png"]))
    assert png.shape[0] >= 2 * 128 and png.shape[1] > 2 * png.shape[0] / 2  # two rows of [frame | overlay]
    md = (out / "report.md").read_text()
    assert "![FID heatmaps](fid_heatmaps.png)" in md and "ImageNet-class check" in md
    assert "FD-DINOv2 (fd_dinov2_40, beside fid40_full) skipped" in md  # companions noted, not an error
    cm = rep["metrics"]["fid_class_matched_40"]
    assert cm["flag_threshold"] == 0.1 and isinstance(cm["flagged"], bool)
    assert f"before class matching: {cm['verdict']}" in capsys.readouterr().out
