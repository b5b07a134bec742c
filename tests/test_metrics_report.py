"""End to end: evaluate -> report fields, caching of real statistics, the CLI, benchmarks."""

import json

import numpy as np
import pytest
import yaml

from vidgen.errors import ConfigError, VidgenError
from vidgen.data.benchmarks import list_benchmarks, load_benchmark
from vidgen.metrics.detectors import RandomDetector
from vidgen.metrics.evaluate import EvalOptions, benchmark_metrics, evaluate
from vidgen.metrics.inputs import ArrayVideo, FakeVideos, RealVideos
from vidgen.metrics.report import ENTRY_FIELDS, write_report


def toy_generate(seed, num_frames):
    """A generator for `--fake test_metrics_report:toy_generate`."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (1, 8, 8, 3))
    return np.clip(base + np.arange(num_frames)[:, None, None, None] * 3, 0, 255).astype(np.uint8)


toy_generate.step = 1234


def _real(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return RealVideos([ArrayVideo(rng.integers(0, 256, (int(k), 8, 8, 3), dtype=np.uint8))
                       for k in rng.integers(40, 60, n)], "manifest-hash", "mem")


def _opts(tmp_path, metrics, **kw):
    return EvalOptions(metrics, detectors={"i3d": RandomDetector(8, temporal=True),
                                           "inception": RandomDetector(8)},
                       stats_dir=tmp_path / "stats", progress=False, **kw)


def test_report_carries_every_field_and_runs(tmp_path):
    fake = FakeVideos("callable", "toy", generate=toy_generate, checkpoint_step=1234)
    metrics = ["fvd10_16f", "fvd10_32f_subsample8f", "fid100_full", "kid100", "pr100", "colour_change4_10f"]
    rep = evaluate(_real(), fake, _opts(tmp_path, metrics, runs=2))
    files = write_report(rep, tmp_path / "out")
    back = json.loads((tmp_path / "out" / "report.json").read_text())
    assert back["fake"]["checkpoint_step"] == 1234 and back["runs"] == 2
    assert back["real"]["manifest_sha256"] == "manifest-hash"
    names = set(back["metrics"])
    assert names == {"fvd10_16f", "fvd10_32f_subsample8f", "fid100_full", "kid100",
                     "pr100_precision", "pr100_recall", "colour_change4_10f"}
    for e in back["metrics"].values():
        for field in ENTRY_FIELDS:
            assert field in e, (e["name"], field)
        assert len(e["values"]) == 2 and e["value"] == pytest.approx(np.mean(e["values"]))
        assert e["std"] == pytest.approx(np.std(e["values"], ddof=1))
        assert len(e["seeds"]["real"]) == 2 and e["seeds"]["real"][0] != e["seeds"]["real"][1]
    fvd = back["metrics"]["fvd10_32f_subsample8f"]
    assert fvd["num_real"] == [10, 10] and fvd["num_fake"] == [10, 10]
    assert fvd["protocol"]["frame_offsets"] == [0, 8, 16, 24] and fvd["real_sampling"] == "per_video"
    assert fvd["detector"]["sha256"] == RandomDetector(8, temporal=True).sha256
    assert fvd["seeds"]["fake"] == [[0, 9], [1_000_000, 1_000_009]]
    assert back["metrics"]["fid100_full"]["num_fake"] == [100, 100]
    assert len(back["metrics"]["colour_change4_10f"]["curves"]["real"]) == 10
    md = (tmp_path / "out" / "report.md").read_text()
    assert "fvd10_32f_subsample8f" in md and "4 @ stride 8" in md and "per_video" in md
    assert "json" in files and "md" in files


def test_real_statistics_are_cached_by_manifest_protocol_and_detector(tmp_path):
    fake = FakeVideos("callable", "toy", generate=toy_generate)
    first = evaluate(_real(), fake, _opts(tmp_path, ["fvd10_16f", "fid50_full"]))
    again = evaluate(_real(), fake, _opts(tmp_path, ["fvd10_16f", "fid50_full"]))
    for name in ("fvd10_16f", "fid50_full"):
        assert first["metrics"][name]["real_stats_cached"] == [False]
        assert again["metrics"][name]["real_stats_cached"] == [True]
        assert again["metrics"][name]["value"] == pytest.approx(first["metrics"][name]["value"], rel=1e-12)
    changed = _real()
    changed.manifest_sha256 = "another dataset"
    other = evaluate(changed, fake, _opts(tmp_path, ["fvd10_16f"]))
    assert other["metrics"]["fvd10_16f"]["real_stats_cached"] == [False]
    nocache = evaluate(_real(), fake, _opts(tmp_path, ["fvd10_16f"], use_cache=False))
    assert nocache["metrics"]["fvd10_16f"]["real_stats_cached"] == [False]


def test_unknown_metric_is_a_clear_error(tmp_path):
    fake = FakeVideos("callable", "toy", generate=toy_generate)
    with pytest.raises(VidgenError, match="unknown metric 'fvd'"):
        evaluate(_real(), fake, _opts(tmp_path, ["fvd"]))


def _frame_folders(root, n, length, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for v in range(n):
        d = root / f"video{v:02d}"
        d.mkdir(parents=True)
        for t in range(length):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{t:04d}.png")


def test_cli_end_to_end_and_missing_detector(tmp_path, monkeypatch, capsys):
    pytest.importorskip("vidgen.data.sources")
    from vidgen.cli import main

    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    _frame_folders(tmp_path / "real", 3, 20, 0)
    _frame_folders(tmp_path / "fake", 4, 16, 1)
    out = tmp_path / "eval"
    code = main(["eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--metrics", "fvd4_16f,fid30_full", "--out", str(out), "--quiet",
                 "--detector", "i3d=random:8", "--detector", "inception=random:8"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["fake"]["kind"] == "directory" and rep["real"]["videos"] == 3
    assert rep["metrics"]["fvd4_16f"]["num_fake"] == [4]
    assert (tmp_path / "cache" / "stats").is_dir()  # real statistics cached
    code = main(["eval", "--real", str(tmp_path / "real"), "--fake", "test_metrics_report:toy_generate",
                 "--metrics", "fvd4_16f", "--out", str(out), "--quiet", "--detector", "i3d=random:8"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["fake"]["checkpoint_step"] == 1234
    assert rep["metrics"]["fvd4_16f"]["real_stats_cached"] == [True]
    capsys.readouterr()
    code = main(["eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--metrics", "fvd4_16f", "--out", str(out), "--detector-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "i3d_torchscript.pt" in err and "bec6519f66ea534e" in err
    assert "Traceback" not in err


def test_benchmark_definitions_load_and_validate(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDGEN_DATASETS", raising=False)
    names = list_benchmarks()
    assert {"horseback", "mtb", "sky_timelapse", "acid", "amos"} <= set(names)
    mtb = load_benchmark("mtb")
    assert (mtb.clips, mtb.videos, mtb.licence) == (1202, 28, "CC BY 4.0")
    assert load_benchmark("horseback").clips == 66
    for name in names:  # every definition's protocols are metric names of `vidgen eval`
        bench = load_benchmark(name)
        assert bench.resolutions and benchmark_metrics(bench) == bench.protocols
    spec = yaml.safe_load(mtb.path.read_text())
    spec["protocols"] = ["fvd2048_16f", "fvdd"]
    (tmp_path / "mtb.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="fvdd"):
        benchmark_metrics(load_benchmark(str(tmp_path / "mtb.yaml")))
    spec["protocols"], spec["resolutions"] = ["fvd2048_16f"], ["144 by 256"]
    (tmp_path / "mtb.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="resolution"):
        load_benchmark(str(tmp_path / "mtb.yaml"))
    with pytest.raises(ConfigError, match="known: .*mtb"):
        load_benchmark("no_such_benchmark")


def test_fd_dinov2_is_reported_beside_fid_when_its_detector_is_present(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))  # no detector files there
    fake = FakeVideos("callable", "toy", generate=toy_generate)
    opts = EvalOptions(["fid40_full"], detectors={"inception": RandomDetector(8), "dinov2": RandomDetector(8, seed=3)},
                       stats_dir=tmp_path / "stats", progress=False)
    rep = evaluate(_real(), fake, opts)
    assert set(rep["metrics"]) == {"fid40_full", "fd_dinov2_40"}
    e = rep["metrics"]["fd_dinov2_40"]
    assert e["companion_of"] == "fid40_full" and e["num_fake"] == [40]
    assert e["detector"]["sha256"] == RandomDetector(8, seed=3).sha256
    assert e["value"] != rep["metrics"]["fid40_full"]["value"]
    assert [n for n in rep["notes"] if n.startswith("CLIP-FD (clip_fd_40, beside fid40_full) skipped")]
    alone = evaluate(_real(), fake, EvalOptions(["fid40_full"], detectors={"inception": RandomDetector(8)},
                                                stats_dir=tmp_path / "stats", progress=False, companions=False))
    assert set(alone["metrics"]) == {"fid40_full"} and alone["notes"] == []
    with pytest.raises(VidgenError, match="dinov2_vitl14_pretrain.pth"):  # named explicitly: an error
        evaluate(_real(), fake, EvalOptions(["fid40_full", "fd_dinov2_40"], detectors={"inception": RandomDetector(8)},
                                            stats_dir=tmp_path / "stats", progress=False))
