"""One crop_resize and one shard reader (issue 15): raw and prepared data give the same pixels
for the same clip up to the JPEG error of the shards, and every path resizes the same way."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.data.datasets import ClipDataset
from vidgen.data.manifest import PreparedClip, load_manifest
from vidgen.data.prepare import PrepareConfig, prepare
from vidgen.data.resize import crop_box, crop_resize, fit_box
from vidgen.data.sources import open_source
from vidgen.data.synthetic import make_drive
from vidgen.metrics.inputs import ResizedVideo


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resize")
    make_drive(root / "videos", seed=2, frames=24, size=(72, 128), videos=2, fps=10)
    prepare(PrepareConfig(inputs=[str(root / "videos")], out=str(root / "prepared"),
                          resolutions=[(36, 64), (50, 50)]), log=lambda m: None)
    return root


def _levels(x: torch.Tensor) -> np.ndarray:
    """float [C, T, H, W] in [-1, 1] -> uint8 [T, H, W, C] (exact for values from uint8)."""
    return ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _jpeg(frame: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=95, subsampling=0)  # the shards' settings
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("res", [(36, 64), (50, 50)])
def test_raw_and_prepared_give_the_same_pixels_up_to_jpeg(data, res):
    raw = ClipDataset(data / "videos", clip_len=24, resolution=res, random_start=False)
    prep = ClipDataset(data / "prepared", clip_len=24, resolution=res, random_start=False)
    assert raw.windows == prep.windows and len(raw) == 2
    diffs = []
    for i in range(len(raw)):
        a, b = _levels(raw[i]), _levels(prep[i])
        # the prepared frame IS the raw frame through the shard's JPEG: nothing else differs
        assert all(np.array_equal(_jpeg(fa), fb) for fa, fb in zip(a, b))
        diffs.append(np.abs(a.astype(int) - b.astype(int)))
    d = np.concatenate([x.ravel() for x in diffs])
    # measured: mean 1.5 / 1.3 levels, max 20 / 21 (JPEG q95 4:4:4 on the sharp synthetic drive)
    assert d.mean() < 2.5 and d.max() <= 32
    assert d.mean() > 0  # the frames do differ by the JPEG error: the comparison is not vacuous


def test_every_path_uses_the_one_crop_resize(data):
    src = open_source(data / "videos" / "drive_001.mp4", backend="pyav")
    frames = src.get(range(6))
    want = np.stack([crop_resize(f, (50, 50)) for f in frames])
    raw = ClipDataset(data / "videos", clip_len=6, resolution=(50, 50), random_start=False)
    assert np.array_equal(_levels(raw[raw.windows.index((1, 0))]), want)      # training data
    assert np.array_equal(ResizedVideo(src, (50, 50)).get(range(6)), want)    # metrics' real videos
    # frames vary across the clip, so equality is not between constant images
    assert np.abs(want[0].astype(int) - want[-1].astype(int)).mean() > 3


def test_crop_resize_box_geometry():
    assert crop_box(72, 128, (36, 64)) == (0.0, 0.0, 128.0, 72.0)
    assert crop_box(72, 128, (50, 50)) == (28.0, 0.0, 100.0, 72.0)
    assert crop_box(100, 100, (30, 40)) == (0.0, 12.5, 100.0, 87.5)  # fractional, centred
    assert fit_box((10.0, 20.0, 50.0, 40.0), (1, 1)) == (20.0, 20.0, 40.0, 40.0)
    ramp = np.repeat(np.repeat(np.arange(200, dtype=np.uint8)[None, :, None], 100, 0), 3, 2)  # x gradient
    out = crop_resize(ramp, (10, 20))  # 100x200 -> 10x20: a 10x reduction of a linear ramp
    assert out.shape == (10, 20, 3) and np.array_equal(out, crop_resize(ramp, (10, 20)))
    centres = (np.arange(20) + 0.5) * 10 - 0.5  # where each output pixel samples the ramp
    assert np.abs(out[5, 2:-2, 0] - centres[2:-2]).max() <= 1  # exact away from the edges
    assert crop_resize(ramp, (100, 200)) is ramp  # nothing to do
    shifted = crop_resize(ramp, (100, 150), (10.25, 0.0, 160.25, 100.0))  # a sub-pixel box, scale 1
    assert np.abs(shifted[50, 2:-2, 0] - (np.arange(2, 148) + 10.25)).max() <= 0.75


def test_prepared_clip_is_the_one_shard_reader(data):
    m = load_manifest(data / "prepared")
    clip = PreparedClip(data / "prepared", "36x64", m["clips"][0])
    ds = ClipDataset(data / "prepared", clip_len=24, resolution=(36, 64), random_start=False)
    assert type(ds.sources._reader(0, (36, 64))) is PreparedClip
    assert np.array_equal(_levels(ds[0]), clip.get(range(24)))
