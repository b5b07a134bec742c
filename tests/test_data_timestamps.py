"""Capture times from names, EXIF and sidecars on the shared time-lapse folders."""

import json
from datetime import datetime, timezone

import pytest

from vidgen.data.sources import FolderSource
from vidgen.data.timestamps import capture_times, parse_name
from vidgen.errors import DataError


def _files(folder):
    return FolderSource(folder).files


def test_builtin_patterns():
    utc = timezone.utc
    assert parse_name("20130502_071500.jpg", "%Y%m%d_%H%M%S") == datetime(2013, 5, 2, 7, 15, tzinfo=utc)
    assert parse_name("2019-01-02-03-04-05.png", "%Y-%m-%d-%H-%M-%S") == datetime(2019, 1, 2, 3, 4, 5, tzinfo=utc)
    assert parse_name("2023-06-13T03_11_46.jpg", "%Y-%m-%dT%H_%M_%S") == datetime(2023, 6, 13, 3, 11, 46, tzinfo=utc)
    with pytest.raises(ValueError, match="does not match"):
        parse_name("IMG_0001.jpg", "%Y%m%d_%H%M%S")
    with pytest.raises(DataError, match="not supported"):
        capture_times(["a.jpg"], pattern="%Q")


def test_chamonix_names_and_exif_agree(shared_data):
    names = capture_times(_files(shared_data / "timelapse" / "chamonix"))
    exif = capture_times(_files(shared_data / "timelapse" / "chamonix_exif"))
    assert names.method == "name:%Y%m%d_%H%M%S" and exif.method == "exif"
    assert names.ok and exif.ok and len(names.times) == 40
    assert names.times == exif.times
    assert names.times[0] == datetime(2013, 5, 2, 7, 15, tzinfo=timezone.utc)
    assert names.times[-1] == datetime(2013, 9, 19, 6, 45, tzinfo=timezone.utc)


def test_panorama_user_pattern(shared_data):
    rep = capture_times(_files(shared_data / "timelapse" / "panorama"), pattern="%Y_%m%d_%H%M0")
    assert rep.ok and len(rep.times) == 40
    assert rep.times[0] == datetime(2012, 1, 4, 9, 40, tzinfo=timezone.utc)
    assert rep.times[-1].date().isoformat() == "2012-12-19"


def test_vegas_auto_pattern(shared_data):
    rep = capture_times(_files(shared_data / "timelapse" / "vegas_webcam"))
    assert rep.method == "name:%Y-%m-%dT%H_%M_%S" and rep.ok and len(rep.times) == 1479
    assert rep.times[0] == datetime(2023, 6, 13, 3, 11, 46, tzinfo=timezone.utc)


def test_bad_timestamps_reported_not_guessed(shared_data):
    rep = capture_times(_files(shared_data / "bad" / "bad_timestamps"))
    bad = dict(rep.unparseable)
    assert "day is out of range" in bad["20210230_120000.jpg"]
    assert "hour must be in 0..23" in bad["20210302_250000.jpg"]
    assert "does not match" in bad["IMG_0042.jpg"]
    assert rep.duplicates == [["20210301_120000 (1).jpg", "20210301_120000.jpg"]]
    assert sum(t is not None for t in rep.times) == 3 and not rep.ok


def test_sidecar_csv_json_and_out_of_order(tmp_path):
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / n).write_bytes(b"")
    (tmp_path / "times.csv").write_text("file,time\na.jpg,2020-01-01T10:00:00\nb.jpg,2020-01-01T09:00:00+01:00\n"
                                        "c.jpg,1577872800\n")
    rep = capture_times([tmp_path / n for n in ("a.jpg", "b.jpg", "c.jpg")])
    assert rep.method == "sidecar:times.csv"
    assert rep.times[1] == datetime(2020, 1, 1, 8, 0, tzinfo=timezone.utc)
    assert rep.out_of_order == ["b.jpg"]
    assert rep.duplicates == [["a.jpg", "c.jpg"]]  # 1577872800 is 2020-01-01 10:00 UTC
    side = tmp_path / "t.json"
    side.write_text(json.dumps({"a.jpg": "2020-02-01T00:00:00Z"}))
    rep = capture_times([tmp_path / "a.jpg", tmp_path / "b.jpg"], source="sidecar", sidecar=side)
    assert rep.unparseable == [("b.jpg", "not listed in t.json")]
