"""Layouts: output shapes, where each input pixel lands, labels, plots."""

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.errors import VidgenError
from vidgen.render.layout import (COLORS, contact_sheet, filmstrip, grid, label_band, line_plot, side_by_side,
                                  stack_strip)
from vidgen.render.writer import read_png_settings


def clips(n: int = 5, t: int = 4, h: int = 6, w: int = 7) -> np.ndarray:
    """Random uint8 clips [N, T, H, W, 3]; every tile differs from every other."""
    return np.random.default_rng(0).integers(0, 256, (n, t, h, w, 3), dtype=np.uint8)


def test_grid_places_each_clip_and_pads():
    batch = clips()
    out = grid(batch, ncols=3, pad=2, pad_value=(1, 2, 3))
    assert out.shape == (4, 2 * 6 + 2, 3 * 7 + 2 * 2, 3)
    for i in range(5):
        y, x = (i // 3) * 8, (i % 3) * 9
        assert np.array_equal(out[:, y:y + 6, x:x + 7], batch[i])
    assert (out[:, 6:8] == [1, 2, 3]).all()  # gap between rows
    assert (out[:, :, 7:9] == [1, 2, 3]).all()  # gap between columns
    assert (out[:, 8:, 18:] == [1, 2, 3]).all()  # the sixth, empty cell
    assert grid(batch).shape == (4, 2 * 6 + 2, 3 * 7 + 4, 3)  # near-square default: 3 columns for 5


def test_grid_of_images_and_uneven_lengths():
    images = clips()[:, 0]  # [N, H, W, 3]
    out = grid(images, ncols=5, pad=0)
    assert out.shape == (6, 35, 3) and np.array_equal(out[:, 14:21], images[2])
    short, long = clips(1, 2)[0], clips(1, 5)[0]
    out = grid([short, long], ncols=2, pad=0)
    assert out.shape == (5, 6, 14, 3)
    assert all(np.array_equal(out[t, :, :7], short[min(t, 1)]) for t in range(5))  # holds its last frame
    with pytest.raises(VidgenError, match="grid tiles must share one size"):
        grid([clips(1)[0], clips(1, h=5)[0]])
    with pytest.raises(VidgenError, match=r"uint8 numpy array .* \(vidgen.render.to_uint8_frames"):
        grid([torch.zeros(4, 6, 7, 3)])


def test_side_by_side_with_labels():
    a, b = clips(1, w=7)[0], clips(1, w=4)[0]
    out = side_by_side(a, b, pad=3, pad_value=50)
    assert out.shape == (4, 6, 7 + 3 + 4, 3)
    assert np.array_equal(out[:, :, :7], a) and np.array_equal(out[:, :, 10:], b) and (out[:, :, 7:10] == 50).all()
    wide_a, wide_b = clips(1, w=40)[0], clips(1, w=40)[0]
    out = side_by_side(wide_a, wide_b, labels=["real", "fake"])
    assert out.shape == (4, 16 + 6, 82, 3)
    assert np.array_equal(out[:, 16:, :40], wide_a)
    band = out[:, :16, :40]
    assert (band == band[:1]).all() and band.max() > 128 and (band[0, :, 0] == 0).all()  # text, same every frame
    assert not np.array_equal(out[0, :16, :40], out[0, :16, 42:])  # two different captions
    assert side_by_side(wide_a[0], wide_b[0]).shape == (6, 82, 3)  # images in, image out
    with pytest.raises(VidgenError, match=r"one height; got heights \[6, 5\]"):
        side_by_side(a, clips(1, h=5)[0])
    with pytest.raises(VidgenError, match="got 1 labels for 2 clips"):
        side_by_side(a, b, labels=["only one"])


def test_contact_sheet_and_filmstrip():
    frames = clips(1, t=10)[0]  # [T, H, W, 3]
    sheet = contact_sheet(frames, ncols=4, pad=1)
    assert sheet.shape == (3 * 6 + 2, 4 * 7 + 3, 3)
    assert np.array_equal(sheet[7:13, 8:15], frames[5])
    labelled = contact_sheet(frames, ncols=4, labels=[f"t={i}" for i in range(10)], pad=1)
    assert labelled.shape == (3 * 22 + 2, 31, 3)
    strip = filmstrip(frames, n=4, pad=0)
    assert strip.shape == (6, 28, 3)
    for k, t in enumerate([0, 3, 6, 9]):  # evenly spaced, first and last included
        assert np.array_equal(strip[:, 7 * k:7 * k + 7], frames[t])
    assert filmstrip(frames[:3], n=8, pad=0).shape == (6, 21, 3)  # fewer frames than asked


def test_stack_strip_tile_and_slit():
    t, h, w = 4, 5, 8
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i] = 10 * (i + 1)  # frame i is flat grey 10(i+1)
    out = stack_strip(frames)  # 4 slices of width 2, from frames 0..3 left to right
    assert out.shape == (h, w, 3)
    assert [int(out[0, x, 0]) for x in range(w)] == [10, 10, 20, 20, 30, 30, 40, 40]
    two = stack_strip(frames, slice_width=4)  # 2 slices from the first and last frames
    assert [int(two[0, x, 0]) for x in (0, 3, 4, 7)] == [10, 10, 40, 40]
    rows = stack_strip(frames, axis=0)  # horizontal slices, time runs down
    assert rows.shape == (h, w, 3) and [int(rows[y, 0, 0]) for y in range(h)] == [10, 20, 30, 30, 40]
    frames[:, :, 3] = 200  # mark column 3, the centre slice for width 1 (x0 = (8 - 1) // 2)
    slit = stack_strip(frames, mode="slit")
    assert slit.shape == (h, t, 3) and (slit == 200).all()
    assert stack_strip(frames, mode="slit", slice_width=2).shape == (h, 2 * t, 3)
    random = clips(1, t=6, h=9, w=12)[0]
    assert np.array_equal(stack_strip(random, axis=0, mode="slit", slice_width=3),
                          stack_strip(random.transpose(0, 2, 1, 3), mode="slit", slice_width=3).transpose(1, 0, 2))
    with pytest.raises(VidgenError, match="slice_width must be in 1..8"):
        stack_strip(frames, slice_width=9)
    with pytest.raises(VidgenError, match="mode must be 'tile' or 'slit'"):
        stack_strip(frames, mode="diagonal")


def test_label_band_draws_text():
    band = label_band("hello", 60, 16)
    assert band.shape == (16, 60, 3) and band.dtype == np.uint8
    assert band.max() > 200 and (band[:, :2] == 0).all()  # white text centred on black


def test_line_plot_draws_curves_and_writes_png(tmp_path):
    x = np.linspace(0, 1, 50)
    y_down = 1 - x
    y_down[20] = np.nan  # a gap, not an error
    img = line_plot({"up": (x, x), "down": (x, y_down)}, tmp_path / "plot.png", "loss", "kimg", "value", size=(320, 240))
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    assert np.array_equal(np.asarray(Image.open(tmp_path / "plot.png")), img)
    assert read_png_settings(tmp_path / "plot.png") == {"plot": "loss", "curves": ["up", "down"]}
    for color, sign in [(COLORS[0], -1), (COLORS[1], 1)]:
        ys, xs = np.nonzero((img == color).all(-1))
        plot = xs < 230  # leave out the legend at the top right
        assert plot.sum() > 100
        assert sign * np.corrcoef(xs[plot], ys[plot])[0, 1] > 0.95  # "up" rises: rows fall as columns grow
    log = line_plot({"fid": ([1, 2, 3], [100.0, 10.0, 1.0])}, logy=True)
    ys, xs = np.nonzero((log == COLORS[0]).all(-1))
    xs, ys = xs[xs < 500], ys[xs < 500]  # leave out the legend
    mid = ys[np.abs(xs - np.median(xs)) < 2].mean()
    assert abs(mid - (ys.min() + ys.max()) / 2) < 6  # 10 sits halfway between 100 and 1
    with pytest.raises(VidgenError, match="curve 'bad': x has 3 values but y has 2"):
        line_plot({"bad": ([1, 2, 3], [1, 2])})
    with pytest.raises(VidgenError, match="no finite points"):
        line_plot({"nan": ([1.0], [np.nan])})
