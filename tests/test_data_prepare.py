"""`vidgen data prepare` / `inspect`: dataset layout, bad inputs, atomicity, benchmark hook."""

import json
from pathlib import Path

import numpy as np
import pytest

import yaml

from vidgen.cli import main
from vidgen.data.benchmarks import REAL_POLICIES, load_benchmark
from vidgen.data.prepare import PrepareConfig, load_manifest, open_prepared, prepare, select_frames
from vidgen.data.sources import ZipSource
from vidgen.data.synthetic import make_drive
from vidgen.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    out = tmp_path_factory.mktemp("drives")
    make_drive(out, seed=1, frames=40, size=(36, 48), videos=2, fps=10)
    return out


def test_prepare_layout_two_resolutions(tmp_path, drives):
    out = tmp_path / "ds"
    rep = prepare(PrepareConfig(inputs=[str(drives)], out=str(out), resolutions=[(16, 16), (24, 32)]))
    m = load_manifest(out)
    assert rep["clips"] == 2 and not rep["skipped"] and m["resolutions"] == ["16x16", "24x32"]
    for c in m["clips"]:
        assert c["num_frames"] == 40 and c["fps"] == 10 and len(c["sha256"]) == 64 and c["times"] is None
        for res in m["resolutions"]:
            assert (out / res / f"{c['id']}.zip").is_file()
    assert json.loads((out / "report.json").read_text())["frames"] == 80
    assert not list(tmp_path.glob(".ds.tmp-*"))


def test_fps_and_trim_selection():
    times = np.array([0.0, 0.1, 0.2, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])  # uneven (VFR)
    assert list(select_frames(times, 10, 5.0, None)) == [0, 2, 4, 6, 8]
    assert list(select_frames(times, 10, None, (0.3, -0.25))) == [3, 4, 5, 6]
    assert list(select_frames(None, 4, 5.0, None)) == [0, 1, 2, 3]


def test_prepare_fps_trim_min_frames(tmp_path, drives):
    out = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(drives)], out=str(out), resolutions=[(16, 16)], fps=5, trim=(1.0, 3.0)))
    assert [c["num_frames"] for c in load_manifest(out)["clips"]] == [10, 10]
    with pytest.raises(DataError, match="no usable clip"):
        prepare(PrepareConfig(inputs=[str(drives / "drive_000.mp4")], out=str(tmp_path / "ds2"),
                              resolutions=[(16, 16)], trim=(0, 1.0), min_frames=11))
    assert not (tmp_path / "ds2").exists()


def test_bad_inputs_skipped_and_reported(tmp_path, drives, shared_data, capsys):
    out = tmp_path / "ds"
    code = main(["data", "prepare", str(shared_data / "bad"), str(drives / "drive_000.mp4"),
                 "--out", str(out), "--resolution", "16x16"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    reasons = {s["path"].split("/bad/")[-1]: s["reason"] for s in report["skipped"]}
    for entry, words in [("empty.mp4", "empty"), ("truncated.mp4", "not a readable video"),
                         ("truncated_faststart.mp4", "no frame could be decoded"),
                         ("text_renamed.mp4", "not a readable video"), ("random_bytes.avi", "not a readable video"),
                         ("audio_only.mp4", "no video stream"), ("path_traversal.zip", "escapes the archive"),
                         ("mixed_sizes", "mixed sizes"), ("corrupt_frame", "frame_000002.jpg"),
                         ("bad_timestamps/20210230_120000.jpg", "day is out of range"),
                         ("bad_timestamps/20210302_250000.jpg", "hour must be in 0..23"),
                         ("bad_timestamps/IMG_0042.jpg", "does not match")]:
        assert words in reasons[entry], entry
    err = capsys.readouterr().err
    assert err.count("skip ") == len(report["skipped"]) and "Traceback" not in err
    clips = load_manifest(out)["clips"]
    assert [c["name"] for c in clips] == ["bad_timestamps", "drive_000"]
    assert len(clips[0]["times"]) == 2  # duplicate time and bad names left out


def test_strict_and_nothing_usable_write_nothing(tmp_path, drives, shared_data, capsys):
    out = tmp_path / "strict"
    assert main(["data", "prepare", str(shared_data / "bad" / "empty.mp4"), str(drives / "drive_000.mp4"),
                 "--out", str(out), "--resolution", "16x16", "--strict"]) == 2
    assert not out.exists() and not list(tmp_path.glob(".strict.tmp-*"))
    assert main(["data", "prepare", str(shared_data / "bad" / "empty.mp4"), "--out", str(out)]) == 2
    assert "no usable clip" in capsys.readouterr().err and not out.exists()


def test_existing_output_and_stale_temp(tmp_path, drives):
    out = tmp_path / "ds"
    (tmp_path / ".ds.tmp-99999").mkdir()  # left by an interrupted run
    cfg = PrepareConfig(inputs=[str(drives / "drive_000.mp4")], out=str(out), resolutions=[(16, 16)])
    prepare(cfg)
    assert not (tmp_path / ".ds.tmp-99999").exists()
    with pytest.raises(DataError, match="already exists"):
        prepare(cfg)
    cfg.overwrite, cfg.inputs = True, [str(drives)]
    prepare(cfg)
    assert len(load_manifest(out)["clips"]) == 2
    # a failed overwrite leaves the previous dataset whole and no temporary folder behind
    cfg.min_frames = 1000
    with pytest.raises(DataError, match="no usable clip"):
        prepare(cfg)
    assert len(load_manifest(out)["clips"]) == 2 and len(open_prepared(out)[2]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def _definition(path, **over):
    """Write a small but complete benchmark definition (the schema of datasets/*.yaml)."""
    spec = {"name": path.stem, "title": "toy", "paper": "none", "source": {"url": "file:///toy"},
            "licence": "CC0", "videos": 2, "clips": 2, "fps": 10, "resolutions": ["16x16"],
            "split": "train", "real_policy": "per_video", "protocols": ["fvd2048_16f"]}
    spec.update(over)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_every_benchmark_definition_loads():
    files = sorted((ROOT / "datasets").glob("*.yaml"))
    assert {f.stem for f in files} >= {"horseback", "mtb", "sky_timelapse", "acid", "amos"}
    for f in files:
        b = load_benchmark(f)
        assert b.name == f.stem and b.path == f and len(b.sha256) == 64
        assert b.real_policy in REAL_POLICIES and b.protocols
        assert all(h > 0 and w > 0 for h, w in b.resolution_sizes())
        assert load_benchmark(f.stem).sha256 == b.sha256  # found by name too
    assert load_benchmark("mtb").resolution_sizes() == [(36, 64), (144, 256)]
    assert (load_benchmark("horseback").clips, load_benchmark("horseback").fps) == (66, 30)


def test_benchmark_definition_errors_name_file_and_key(tmp_path):
    bad = _definition(tmp_path / "toy.yaml", clips="many")
    with pytest.raises(ConfigError, match=r"toy.yaml: key 'clips' must be int/null"):
        load_benchmark(bad)
    spec = yaml.safe_load(_definition(tmp_path / "toy.yaml").read_text())
    del spec["licence"]
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="missing key 'licence'"):
        load_benchmark(tmp_path / "toy.yaml")
    with pytest.raises(ConfigError, match="unknown key 'clip_count'"):
        load_benchmark(_definition(tmp_path / "toy.yaml", clip_count=3))
    with pytest.raises(ConfigError, match="real_policy"):
        load_benchmark(_definition(tmp_path / "toy.yaml", real_policy="first"))
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        load_benchmark(_definition(tmp_path / "toy.yaml", resolutions=["16 by 16"]))
    with pytest.raises(ConfigError, match="expected the file name 'toy'"):
        load_benchmark(_definition(tmp_path / "toy.yaml", name="other"))


def test_benchmark_hook(tmp_path, drives, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIDGEN_DATASETS", raising=False)
    assert main(["data", "prepare", "--benchmark", "nosuch", "--from", str(drives), "--out", "x"]) == 2
    assert "datasets/nosuch.yaml not found" in capsys.readouterr().err
    # a definition given by path: its resolutions and fps are the defaults, the check passes
    toy = _definition(tmp_path / "defs" / "toy.yaml")
    assert main(["data", "prepare", "--benchmark", str(toy), "--from", str(drives), "--out", "a"]) == 0
    m = load_manifest(tmp_path / "a")
    assert m["resolutions"] == ["16x16"] and m["fps"] == 10
    assert m["benchmark"]["name"] == "toy" and m["benchmark"]["problems"] == []
    assert "matches benchmark toy" in capsys.readouterr().out
    # by name, from ./datasets: a clip-count mismatch is reported (written, exit 2)
    _definition(tmp_path / "datasets" / "toy3.yaml", clips=3)
    assert main(["data", "prepare", "--benchmark", "toy3", "--from", str(drives), "--out", "b"]) == 2
    assert "expects 3" in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "report.json").read_text())["benchmark"]["problems"] == [
        "2 clips, toy3.yaml expects 3"]
    # ... and with --strict nothing is written
    assert main(["data", "prepare", "--benchmark", "toy3", "--from", str(drives), "--out", "c",
                 "--strict"]) == 2
    assert "expects 3" in capsys.readouterr().err and not (tmp_path / "c").exists()
    # $VIDGEN_DATASETS replaces the search folders; fps and missing resolutions are checked
    _definition(tmp_path / "env" / "toy25.yaml", fps=25, resolutions=["16x16", "8x8"])
    monkeypatch.setenv("VIDGEN_DATASETS", str(tmp_path / "env"))
    assert main(["data", "prepare", "--benchmark", "toy25", "--from", str(drives), "--out", "d",
                 "--fps", "10", "--resolution", "16x16"]) == 2
    err = capsys.readouterr().err
    assert "fps [10.0], toy25.yaml expects 25" in err and "['8x8'] missing" in err
    # a broken definition fails before anything is decoded
    _definition(tmp_path / "env" / "broken.yaml", fps="fast")
    assert main(["data", "prepare", "--benchmark", "broken", "--from", str(drives), "--out", "e"]) == 2
    assert "broken.yaml: key 'fps'" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_open_prepared_reads_shards_and_checks_them(tmp_path, drives):
    out = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(drives)], out=str(out), resolutions=[(24, 32), (16, 16)]))
    m, res, clips = open_prepared(out)
    assert res == "24x32" and len(clips) == 2  # default: the largest prepared resolution
    assert open_prepared(out, "16x16")[1] == "16x16" and open_prepared(out, (16, 16))[1] == "16x16"
    frames = clips[0].get([39, 0, 39])
    assert frames.shape == (3, 24, 32, 3) and np.array_equal(frames[0], frames[2])
    assert np.array_equal(frames, ZipSource(out / "24x32" / "000000.zip").get([39, 0, 39]))
    with pytest.raises(DataError, match=r"no 8x8 shards \(prepared: 24x32, 16x16\)"):
        open_prepared(out, "8x8")
    m["clips"][1]["num_frames"] = 41  # a manifest that disagrees with its shard
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="41 of 24x32; rerun `vidgen data prepare`"):
        open_prepared(out)[2][1].get([0])
    (out / "16x16" / "000001.zip").unlink()
    with pytest.raises(DataError, match="shards of clips 000001 are missing"):
        open_prepared(out, "16x16")


def test_inspect_writes_contact_sheet(tmp_path, drives, capsys, monkeypatch):
    out = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(drives)], out=str(out), resolutions=[(16, 16)]))
    monkeypatch.chdir(tmp_path)  # the sheet goes to the current folder, never into the dataset
    assert main(["data", "inspect", str(out), "--frames", "4"]) == 0
    text = capsys.readouterr().out
    assert "2 clips, 80 frames" in text and (tmp_path / "ds_contact_sheet.png").is_file()
    assert not (out / "contact_sheet.png").exists()
    from PIL import Image
    sheet = np.asarray(Image.open(tmp_path / "ds_contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[1] >= 4 * 16
    assert main(["data", "inspect", str(drives / "drive_000.mp4"), "--png", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file() and '"num_frames": 40' in capsys.readouterr().out


def test_fileio_atomic_writes_and_checksums(tmp_path):
    import hashlib

    from vidgen.fileio import atomic_path, sha256_file, write_json

    p = write_json(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    assert json.loads(p.read_text()) == {"x": [1, 2]}
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    with pytest.raises(RuntimeError):  # a failed write leaves the old file and no temporary
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(p.read_text()) == {"x": [1, 2]} and sorted(q.name for q in p.parent.iterdir()) == ["a.json"]
