"""`vidgen data prepare` / `inspect`: dataset layout, bad inputs, atomicity, benchmark hook."""

import json
import shutil

import numpy as np
import pytest

from vidgen.cli import main
from vidgen.data.prepare import PrepareConfig, load_manifest, prepare, select_frames
from vidgen.data.synthetic import make_drive
from vidgen.errors import DataError


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


def test_benchmark_hook(tmp_path, drives, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", "--benchmark", "nosuch", "--from", str(drives), "--out", "x"]) == 2
    assert "datasets/nosuch.yaml not found" in capsys.readouterr().err
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "toy.yaml").write_text("clips: 2\nfps: 10\nresolutions: [16x16]\n")
    assert main(["data", "prepare", "--benchmark", "toy", "--from", str(drives), "--out", "a"]) == 0
    assert load_manifest(tmp_path / "a")["resolutions"] == ["16x16"]
    (tmp_path / "datasets" / "toy3.yaml").write_text("clips: 3\nresolutions: [16x16]\n")
    assert main(["data", "prepare", "--benchmark", "toy3", "--from", str(drives), "--out", "b"]) == 2
    assert "expects 3" in capsys.readouterr().err


def test_inspect_writes_contact_sheet(tmp_path, drives, capsys):
    out = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(drives)], out=str(out), resolutions=[(16, 16)]))
    assert main(["data", "inspect", str(out), "--frames", "4"]) == 0
    text = capsys.readouterr().out
    assert "2 clips, 80 frames" in text and (out / "contact_sheet.png").is_file()
    from PIL import Image
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[1] >= 4 * 16
    assert main(["data", "inspect", str(drives / "drive_000.mp4"), "--png", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file() and '"num_frames": 40' in capsys.readouterr().out
