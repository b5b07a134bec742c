"""Data pipeline -> evaluation suite: a synthetic drive, prepared with `vidgen data prepare`,
is the real side of `vidgen eval` (tiny random detectors; the plumbing, not the numbers)."""

import hashlib
import json
import math

import numpy as np
import pytest
import yaml

from vidgen.cli import main
from vidgen.data.prepare import load_manifest
from vidgen.data.sources import ZipSource
from vidgen.data.synthetic import make_drive
from vidgen.metrics.inputs import load_real
from vidgen.metrics.report import ENTRY_FIELDS

DETECTORS = ["--detector", "i3d=random:8", "--detector", "inception=random:8"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    make_drive(root / "drive", seed=0, frames=24, size=(36, 64), videos=3, fps=10)
    make_drive(root / "fake", seed=7, frames=20, size=(36, 64), videos=4, fps=10)
    code = main(["data", "prepare", str(root / "drive"), "--out", str(root / "ds"),
                 "--resolution", "18x32", "--resolution", "36x64"])
    assert code == 0
    return root


def _eval(root, out, *extra):
    return main(["eval", "--real", str(root / "ds"), "--fake", str(root / "fake"),
                 "--metrics", "fvd4_16f,fid40_full,colour_change4_16f", "--out", str(out),
                 "--quiet", *DETECTORS, *extra])


def test_eval_reads_a_prepared_dataset(prepared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    assert _eval(prepared, tmp_path / "a") == 0
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    manifest_sha = hashlib.sha256((prepared / "ds" / "manifest.json").read_bytes()).hexdigest()
    assert rep["real"] == {"path": str(prepared / "ds"), "manifest_sha256": manifest_sha, "videos": 3,
                           "resolution": "36x64", "prepared": True}  # default: the largest prepared
    assert rep["fake"]["kind"] == "directory" and set(rep["metrics"]) == {
        "fvd4_16f", "fid40_full", "colour_change4_16f"}
    for e in rep["metrics"].values():
        assert set(ENTRY_FIELDS) <= set(e) and e["runs"] == 1 and math.isfinite(e["value"])
    fvd = rep["metrics"]["fvd4_16f"]
    assert fvd["num_real"] == [4] and fvd["num_fake"] == [4] and fvd["value"] >= 0
    assert fvd["real_sampling"] == "per_video" and fvd["protocol"]["frames_per_clip"] == 16
    assert fvd["detector"]["sha256"] == rep["detectors"]["i3d"]["sha256"]
    assert rep["metrics"]["fid40_full"]["num_fake"] == [40]
    assert rep["metrics"]["fid40_full"]["num_real"] == [72]  # every prepared frame, 3 x 24
    assert fvd["real_stats_cached"] == [False]
    assert (tmp_path / "a" / "report.md").is_file() and (tmp_path / "a" / "colour_change4_16f.png").is_file()

    # the cache key holds the manifest hash AND the resolution read
    assert _eval(prepared, tmp_path / "b", "--resolution", "18x32") == 0
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["real"]["resolution"] == "18x32" and rep["metrics"]["fvd4_16f"]["real_stats_cached"] == [False]
    assert _eval(prepared, tmp_path / "c", "--resolution", "36x64") == 0
    rep = json.loads((tmp_path / "c" / "report.json").read_text())
    assert rep["metrics"]["fvd4_16f"]["real_stats_cached"] == [True]

    capsys.readouterr()
    assert _eval(prepared, tmp_path / "d", "--resolution", "72x128") == 2
    err = capsys.readouterr().err
    assert "no 72x128 shards (prepared: 18x32, 36x64)" in err and "Traceback" not in err


def test_eval_with_a_benchmark_definition(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))
    toy = tmp_path / "toy.yaml"
    toy.write_text(yaml.safe_dump({
        "name": "toy", "title": "toy", "paper": "none", "source": {"url": "file:///toy"},
        "licence": "CC0", "videos": 3, "clips": 3, "fps": 10, "resolutions": ["18x32", "36x64"],
        "split": "train", "real_policy": "uniform", "protocols": ["fvd4_16f"]}))
    code = main(["eval", "--benchmark", str(toy), "--real", str(prepared / "ds"), "--fake",
                 str(prepared / "fake"), "--out", str(tmp_path / "o"), "--quiet", *DETECTORS])
    assert code == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["benchmark"]["name"] == "toy" and len(rep["benchmark"]["sha256"]) == 64
    assert list(rep["metrics"]) == ["fvd4_16f"] and rep["real_policy"] == "uniform"
    assert rep["metrics"]["fvd4_16f"]["real_sampling"] == "uniform"


def test_prepared_frames_are_the_shards(prepared):
    real = load_real(prepared / "ds", "18x32")
    m = load_manifest(prepared / "ds")
    assert [len(v) for v in real.videos] == [c["num_frames"] for c in m["clips"]] == [24, 24, 24]
    idx = np.array([5, 0, 23, 5])
    got = real.videos[1].get(idx)
    want = ZipSource(prepared / "ds" / "18x32" / f"{m['clips'][1]['id']}.zip").get(idx)
    assert got.shape == (4, 18, 32, 3) and got.dtype == np.uint8 and np.array_equal(got, want)


def test_raw_folder_at_a_resolution_matches_prepared(prepared):
    raw = load_real(prepared / "drive", "18x32")
    assert raw.resolution == "18x32" and not raw.prepared and len(raw.videos) == 3
    a = raw.videos[0].get([3]).astype(np.float64)
    b = load_real(prepared / "ds", "18x32").videos[0].get([3]).astype(np.float64)
    assert a.shape == b.shape == (1, 18, 32, 3)
    assert np.abs(a - b).mean() < 4  # same crop + resize; only the shard's JPEG coding differs
