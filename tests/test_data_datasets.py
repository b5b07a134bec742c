"""ClipDataset / TimedFrameDataset over prepared and raw data; synthetic sample data."""

import json
from datetime import datetime

import numpy as np
import pytest
import torch

from vidgen.data.datasets import ClipDataset, TimedFrameDataset, all_capture_times
from vidgen.data.prepare import PrepareConfig, prepare
from vidgen.data.sources import open_source
from vidgen.data.synthetic import make_drive, make_timelapse
from vidgen.data.timestamps import capture_times
from vidgen.errors import DataError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipdata")
    make_drive(root / "videos", seed=2, frames=36, size=(48, 64), videos=2, fps=10)
    prepare(PrepareConfig(inputs=[str(root / "videos")], out=str(root / "prepared"),
                          resolutions=[(12, 16), (24, 32)]), log=lambda m: None)
    return root


def test_prepared_round_trip_matches_raw(data):
    raw = ClipDataset(data / "videos", clip_len=8, stride=2, resolution=(12, 16), random_start=False)
    prep = ClipDataset(data / "prepared", clip_len=8, stride=2, resolution="12x16", random_start=False)
    assert len(raw) == len(prep) == 4 and raw.windows == prep.windows  # 2 videos x 2 windows of 15
    for i in range(len(raw)):
        a, b = raw[i], prep[i]
        assert a.shape == b.shape == (3, 8, 12, 16) and a.dtype == torch.float32
        assert a.min() >= -1 and a.max() <= 1
        assert (a - b).abs().mean() < 0.05  # JPEG + PIL bicubic vs torch bilinear, both antialiased


def test_multires_is_aligned(data):
    ds = ClipDataset(data / "prepared", clip_len=4, resolution=[(12, 16), (24, 32)], random_start=False)
    item = ds[1]
    assert set(item) == {"12x16", "24x32"}
    lo, hi = item["12x16"], item["24x32"]
    assert lo.shape == (3, 4, 12, 16) and hi.shape == (3, 4, 24, 32)
    down = torch.nn.functional.avg_pool2d(hi.transpose(0, 1), 2).transpose(0, 1)
    other = ds[3]["24x32"]
    assert (down - lo).abs().mean() < 0.05
    assert (down - torch.nn.functional.avg_pool2d(other.transpose(0, 1), 2).transpose(0, 1)).abs().mean() > \
        (down - lo).abs().mean()


def test_random_start_and_worker_loading(data):
    ds = ClipDataset(data / "videos", clip_len=6, resolution=(12, 16))
    assert len(ds) == 2
    torch.manual_seed(0)
    starts = {ds.window(0)[1] for _ in range(20)}
    assert len(starts) > 3 and max(starts) <= 36 - 6
    fixed = ClipDataset(data / "videos", clip_len=6, resolution=(12, 16), random_start=False)
    loader = torch.utils.data.DataLoader(fixed, batch_size=3, num_workers=2)
    batches = torch.cat(list(loader))
    assert batches.shape == (len(fixed), 3, 6, 12, 16)
    assert torch.equal(batches[4], fixed[4])  # workers reopen sources and read the same frames


def test_clip_dataset_errors(data, tmp_path):
    with pytest.raises(DataError, match="no clip has 99 frames"):
        ClipDataset(data / "videos", clip_len=50, stride=2)
    with pytest.raises(DataError, match="no 36x64 shards"):
        ClipDataset(data / "prepared", clip_len=4, resolution=(36, 64))
    with pytest.raises(DataError, match="pass resolution="):
        ClipDataset(data / "prepared", clip_len=4)
    with pytest.raises(DataError, match="no readable clip"):
        ClipDataset(tmp_path, clip_len=4)


@pytest.fixture(scope="module")
def timelapse(tmp_path_factory):
    out = tmp_path_factory.mktemp("tl")
    make_timelapse(out, seed=4, size=(32, 32), days=60)
    return out


def test_synthetic_timelapse_factors_and_times(timelapse):
    factors = json.loads((timelapse / "factors.json").read_text())
    rows = factors["frames"]
    assert factors["missing_days"] > 0 and len(rows) > 60
    rep = capture_times(sorted(timelapse.glob("*.jpg")))
    assert rep.ok and [t.isoformat() for t in rep.times] == [r["time"] for r in rows]
    gaps = np.diff([t.timestamp() for t in rep.times])
    assert gaps.min() > 0 and gaps.max() > 2 * 86400 and np.std(gaps) > 3600  # irregular, missing days
    for key in ("trend", "day", "year", "cloud", "haze"):
        assert all(0 <= r[key] <= 1 for r in rows)
    assert rows[0]["trend"] == 0 and rows[-1]["trend"] == 1


def test_timed_frame_dataset(timelapse):
    ds = TimedFrameDataset(timelapse, resolution=(16, 16))
    frame, t, i = ds[5]
    assert frame.shape == (3, 16, 16) and i == 5 and -1 <= frame.min() <= frame.max() <= 1
    times = all_capture_times(ds)
    rows = json.loads((timelapse / "factors.json").read_text())["frames"]
    assert len(ds) == len(rows) and np.all(np.diff(times) > 0)
    assert t == times[5] == datetime.fromisoformat(rows[5]["time"]).timestamp()
    # night frames are darker than noon frames: the daily light cycle is in the pixels
    day = np.array([r["day"] for r in rows])
    night = [ds[k][0].mean() for k in np.flatnonzero((day < 0.1) | (day > 0.95))[:5]]
    noon = [ds[k][0].mean() for k in np.flatnonzero(np.abs(day - 0.5) < 0.1)[:5]]
    assert max(night) < min(noon)


def test_timed_frames_from_shared_panorama(shared_data, data):
    ds = TimedFrameDataset(shared_data / "timelapse" / "panorama", resolution=(32, 256), time_pattern="%Y_%m%d_%H%M0")
    assert len(ds) == 40 and ds[0][0].shape == (3, 32, 256)
    with pytest.raises(DataError, match="no frame with a capture time"):
        TimedFrameDataset(data / "videos")
    with pytest.raises(DataError, match="frame_000002.jpg"):  # the reason reaches the user
        TimedFrameDataset(shared_data / "bad" / "corrupt_frame")


def test_synthetic_drive_is_deterministic_and_changes(tmp_path):
    a = make_drive(tmp_path / "a", seed=7, frames=30, size=(32, 48), videos=1)[0]
    b = make_drive(tmp_path / "b", seed=7, frames=30, size=(32, 48), videos=1)[0]
    c = make_drive(tmp_path / "c", seed=8, frames=30, size=(32, 48), videos=1)[0]
    fa, fb, fc = (open_source(p, backend="pyav").get(range(30)).astype(float) for p in (a, b, c))
    assert fa.shape == (30, 32, 48, 3) and np.array_equal(fa, fb)
    assert np.abs(fa - fc).mean() > 1
    assert np.abs(fa[0] - fa[-1]).mean() > 3  # the camera moves: content changes over time
