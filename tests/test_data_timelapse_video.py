"""Time-lapses delivered as one video (issue 16, item 3) and `timelapse train --time-pattern`
(item 7): frame i of the video is captured at start + i * interval, the start given or read
from the container's creation_time."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidgen.cli import main
from vidgen.data.datasets import TimedFrameDataset
from vidgen.data.prepare import load_manifest
from vidgen.data.timestamps import parse_interval
from vidgen.errors import DataError

START = datetime(2023, 6, 13, 3, 11, 46, tzinfo=timezone.utc)
TINY = ["model.resolution=16", "model.channel_base=256", "model.channel_max=32", "model.z_dim=16",
        "model.w_dim=16", "model.cond_mlp_layers=2", "engine.batch=4", "engine.workers=0", "engine.device=cpu",
        "engine.steps=1"]


def write_timelapse_mp4(path: Path, frames: int = 30, creation_time: str | None = None) -> Path:
    """A day of light in ``frames`` frames (brightness follows the sun), 32x32 H.264."""
    with av.open(str(path), "w") as c:
        if creation_time:
            c.metadata["creation_time"] = creation_time
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            level = int(128 + 100 * np.sin(2 * np.pi * i / frames))
            img = np.full((32, 32, 3), level, np.uint8)
            img[8:24, 8:24] = 255 - level  # some structure
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("tlvideo")
    (d / "plain").mkdir()
    plain = write_timelapse_mp4(d / "plain" / "tl.mp4")
    stamped = write_timelapse_mp4(d / "stamped.mp4", creation_time="2023-06-13T03:11:46.000000Z")
    return plain, stamped


def test_parse_interval():
    assert [parse_interval(t) for t in ("60s", "15m", "1.5h", "1d", "500ms", "90", 30)] == \
        [60, 900, 5400, 86400, 0.5, 90, 30]
    for bad in ("0s", "-5m", "soon", "1y", "nan", "inf"):
        with pytest.raises(DataError, match="--interval"):
            parse_interval(bad)


def test_prepare_a_timelapse_video(tmp_path, videos, capsys):
    plain, stamped = videos
    out = tmp_path / "ds"
    assert main(["data", "prepare", str(plain), "--out", str(out), "--resolution", "16x16",
                 "--start", "2023-06-13T03:11:46", "--interval", "60s"]) == 0
    (clip,) = load_manifest(out)["clips"]
    assert clip["num_frames"] == 30
    assert clip["times"] == [(START + timedelta(minutes=i)).isoformat() for i in range(30)]
    # without --start: the container's creation time is the first frame's
    assert main(["data", "prepare", str(stamped), "--out", str(tmp_path / "ds2"), "--resolution", "16x16",
                 "--interval", "15m"]) == 0
    (clip,) = load_manifest(tmp_path / "ds2")["clips"]
    assert clip["times"][0] == START.isoformat() and clip["times"][-1] == (START + timedelta(minutes=15 * 29)).isoformat()
    # an offset in --start is honoured (stored as UTC)
    assert main(["data", "prepare", str(plain), "--out", str(tmp_path / "ds3"), "--resolution", "16x16",
                 "--start", "2023-06-12T20:11:46-07:00", "--interval", "1m"]) == 0
    assert load_manifest(tmp_path / "ds3")["clips"][0]["times"][0] == START.isoformat()
    capsys.readouterr()
    # no --start and no creation time: a clear line asking for --start
    assert main(["data", "prepare", str(plain), "--out", str(tmp_path / "ds4"), "--interval", "60s"]) == 2
    err = capsys.readouterr().err
    assert "records no creation time" in err and "pass --start" in err and "Traceback" not in err
    # --start names the first frame of ONE video
    assert main(["data", "prepare", str(plain), str(stamped), "--out", str(tmp_path / "ds5"),
                 "--start", "2023-06-13T03:11:46", "--interval", "60s"]) == 2
    assert "the inputs hold 2 videos" in capsys.readouterr().err
    assert not any((tmp_path / f"ds{k}").exists() for k in (4, 5))


def test_timed_frame_dataset_reads_a_video(videos):
    plain, stamped = videos
    ds = TimedFrameDataset(plain, start="2023-06-13T03:11:46", interval="60s")
    assert len(ds) == 30 and np.allclose(np.diff(ds.times), 60) and ds.times[0] == START.timestamp()
    frame, t, i = ds[10]
    assert frame.shape == (3, 32, 32) and t == START.timestamp() + 600
    means = [float(ds[k][0].mean()) for k in range(0, 30, 5)]
    assert np.ptp(means) > 0.5  # the frames differ: the day of light is in the pixels
    assert TimedFrameDataset(stamped, interval="1h").times[1] == START.timestamp() + 3600
    with pytest.raises(DataError, match="no frame with a capture time"):
        TimedFrameDataset(plain)  # a video and no interval: no times
    with pytest.raises(DataError, match="records no creation time"):
        TimedFrameDataset(plain, interval="60s")


def test_timelapse_train_on_a_video(tmp_path, videos):
    from timelapse.cli import main as tl_main
    from vidgen.train.checkpoint import read_checkpoint

    plain, _ = videos
    sets = sum((["--set", s] for s in TINY), [])
    assert tl_main(["train", "--data", str(plain), "--config", "configs/timelapse/tiny.yaml", "--out", str(tmp_path),
                    "--start", "2023-06-13T03:11:46", "--interval", "1h", *sets]) == 0
    (run,) = tmp_path.iterdir()
    c = read_checkpoint(run)
    assert c.config["data"]["start"] == "2023-06-13T03:11:46" and c.config["data"]["interval"] == "1h"
    axis = c.network_state("G_ema")
    assert c.step == 1 and "time.axis_days" in axis


def test_timelapse_train_time_pattern_reaches_the_config_as_written(tmp_path, capsys):
    from timelapse.cli import main as tl_main
    from vidgen.train.checkpoint import read_checkpoint

    frames = tmp_path / "cam"
    frames.mkdir()
    for k in range(8):  # the panorama webcam's naming: year, month+day, hour+minute and a 0
        name = f"2012_{1 + k // 4:02d}{10 + 3 * k:02d}_{(6 + 2 * k) % 24:02d}300.jpg"
        Image.new("RGB", (16, 16), (20 * k, 90, 200 - 20 * k)).save(frames / name)
    sets = sum((["--set", s] for s in TINY), [])
    assert tl_main(["train", "--data", str(frames), "--config", "configs/timelapse/tiny.yaml",
                    "--out", str(tmp_path / "runs"), "--time-pattern", "%Y_%m%d_%H%M0", *sets]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert read_checkpoint(run).config["data"]["time_pattern"] == "%Y_%m%d_%H%M0"
    # a pattern that does not fit the names is the user's error, named in one line
    assert tl_main(["train", "--data", str(frames), "--config", "configs/timelapse/tiny.yaml",
                    "--out", str(tmp_path / "runs2"), "--time-pattern", "%Y%m%d_%H%M%S", *sets]) == 2
    err = capsys.readouterr().err
    assert "timelapse: error:" in err and "no frame with a capture time" in err
