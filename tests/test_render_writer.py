"""Writer: round trips through PyAV, embedded settings, atomic writes, bounded memory."""

import json
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.errors import ConfigError, DataError, VidgenError
from vidgen.render import writer as writer_module
from vidgen.render.writer import (open_writer, read_png_settings, read_settings, save_png, to_uint8_frames,
                                  write_video)


def smooth_clip(t: int = 12, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    """Moving colour gradients: content lossy codecs keep well. -> uint8 [T, H, W, 3]"""
    phase = np.random.default_rng(seed).uniform(0, 6, 3)
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    chans = [128 + 90 * np.sin(xx / 9 + yy / 13 + tt / 4 + phase[c] + c) for c in range(3)]
    return np.stack(chans, -1).round().astype(np.uint8)


def read_av(path: Path) -> tuple[np.ndarray, Fraction]:
    """All frames as uint8 [T, H, W, 3] and the stream's average frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, Fraction(stream.average_rate)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name, bound", [("clip.mp4", 3.0), ("clip.webm", 3.0), ("clip.gif", 4.0), ("frames", 0.0)])
def test_round_trip_in_chunks(tmp_path, name, bound):
    clip = smooth_clip()
    with open_writer(tmp_path / name, fps=12, settings={"seed": 7}) as w:
        for start in range(0, len(clip), 5):  # chunks of 5, 5, 2
            w.append(clip[start:start + 5])
        assert not (tmp_path / name).exists(), "the output appears only on close"
    assert w.frames_written == 12
    path = tmp_path / name / "%06d.png" if name == "frames" else tmp_path / name
    got, rate = read_av(path)
    assert got.shape == clip.shape
    assert np.abs(got.astype(float) - clip).mean() <= bound
    if name.endswith((".mp4", ".webm")):
        assert rate == 12
    assert leftovers(tmp_path) == [name]  # no temporary file left


def test_settings_round_trip_every_format(tmp_path):
    settings = {"seed": np.int64(3), "truncation": np.float32(0.5), "checkpoint": Path("runs/00001/net.safetensors"),
                "prompt": "snow \u2744 at dawn", "nested": {"sizes": (36, 64), "ok": True, "none": None}}
    expected = json.loads(json.dumps({"seed": 3, "truncation": 0.5, "checkpoint": "runs/00001/net.safetensors",
                                      "prompt": "snow \u2744 at dawn", "nested": {"sizes": [36, 64], "ok": True, "none": None}}))
    clip = smooth_clip(t=3, h=8, w=8)
    for name in ["a.mp4", "a.webm", "a.gif", "frames", "pattern/f_%03d.png"]:
        write_video(tmp_path / name, clip, 10, settings)
        assert read_settings(tmp_path / name) == expected, name
    assert read_png_settings(tmp_path / "frames" / "000002.png") == expected
    assert read_settings(tmp_path / "pattern") == expected
    save_png(tmp_path / "one.png", clip[0], settings)
    assert read_settings(tmp_path / "one.png") == expected
    long = {"curve": list(range(3000))}  # ~15 kB of JSON still fits every container
    for name in ["b.mp4", "b.webm", "b.gif"]:
        write_video(tmp_path / name, clip, 10, long)
        assert read_settings(tmp_path / name) == long


def test_read_settings_of_foreign_or_missing_files(tmp_path):
    with av.open(str(tmp_path / "other.mp4"), "w") as c:  # a video not written by vidgen
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for i in range(2):
            f = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    with pytest.raises(DataError, match="other.mp4: no vidgen settings"):
        read_settings(tmp_path / "other.mp4")
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(DataError, match="plain.png: no vidgen settings"):
        read_settings(tmp_path / "plain.png")
    with pytest.raises(DataError, match="missing.mp4: no such file"):
        read_settings(tmp_path / "missing.mp4")
    (tmp_path / "junk.webm").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="junk.webm: not a readable video"):
        read_settings(tmp_path / "junk.webm")


def test_odd_sizes_mp4_padded_webm_kept(tmp_path):
    clip = smooth_clip(t=4, h=15, w=21)
    write_video(tmp_path / "odd.mp4", clip, 8)
    got, _ = read_av(tmp_path / "odd.mp4")
    assert got.shape == (4, 16, 22, 3)
    assert np.abs(got[:, :15, :21].astype(float) - clip).mean() < 3.0
    write_video(tmp_path / "odd.webm", clip, 8)  # VP9 keeps odd sizes as they are
    assert read_av(tmp_path / "odd.webm")[0].shape == (4, 15, 21, 3)


def test_fractional_fps_and_gif_delays(tmp_path):
    write_video(tmp_path / "ntsc.mp4", smooth_clip(t=6, h=8, w=8), 30000 / 1001)
    assert read_av(tmp_path / "ntsc.mp4")[1] == Fraction(30000, 1001)
    write_video(tmp_path / "slow.gif", smooth_clip(t=9, h=8, w=8), 12)
    with Image.open(tmp_path / "slow.gif") as im:
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
        assert im.info["loop"] == 0
    assert set(durations) <= {80, 90} and sum(durations) == 750  # 9 frames at 12 fps = 0.75 s


def test_gif_sub_blocks_and_long_settings(tmp_path):
    from vidgen.render.gif import skip_sub_blocks, sub_blocks
    for n in (0, 1, 254, 255, 256, 1000):
        data = bytes(range(256)) * 4
        blocks = sub_blocks(data[:n])
        assert skip_sub_blocks(blocks + b"tail", 0) == len(blocks)  # ends right after the terminator
        assert len(blocks) == n + -(-n // 255) + 1  # a length byte per 255 bytes, then a zero
    settings = {"prompt": "x" * 700, "seed": 3}  # a comment of several sub-blocks
    clip = smooth_clip(t=3, h=8, w=8)
    write_video(tmp_path / "long.gif", clip, 10, settings=settings)
    assert read_settings(tmp_path / "long.gif") == settings
    with Image.open(tmp_path / "long.gif") as im:
        assert im.n_frames == 3 and im.size == (8, 8)
    assert leftovers(tmp_path) == ["long.gif"]


@pytest.mark.parametrize("name", ["clip.mp4", "clip.webm", "clip.gif", "frames", "f_%04d.png"])
def test_exception_mid_write_leaves_nothing(tmp_path, name):
    clip = smooth_clip(t=4, h=8, w=8)
    with pytest.raises(RuntimeError, match="boom"):
        with open_writer(tmp_path / name, fps=10) as w:
            w.append(clip)
            assert all(n.startswith(".") for n in leftovers(tmp_path))  # only a hidden temporary file
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_bad_chunk_aborts_and_names_sizes(tmp_path):
    with pytest.raises(VidgenError, match=r"all frames must be 8x8 \(HxW\); got a chunk of 8x10"):
        with open_writer(tmp_path / "clip.mp4", fps=10) as w:
            w.append(smooth_clip(t=2, h=8, w=8))
            w.append(smooth_clip(t=2, h=8, w=10))
    assert leftovers(tmp_path) == []
    dropped = open_writer(tmp_path / "dropped.gif", fps=10)
    dropped.append(smooth_clip(t=2, h=8, w=8))
    del dropped  # never closed: the temporary file goes with it
    assert leftovers(tmp_path) == []


def test_bad_paths_and_options(tmp_path):
    with pytest.raises(ConfigError, match=r"clip.avi: unknown output type '.avi'"):
        open_writer(tmp_path / "clip.avi", 10)
    with pytest.raises(ConfigError, match="use save_png"):
        open_writer(tmp_path / "one.png", 10)
    with pytest.raises(ConfigError, match="crf must be an integer in 0..51"):
        open_writer(tmp_path / "a.mp4", 10, crf=70)
    with pytest.raises(ConfigError, match="preset must be one of"):
        open_writer(tmp_path / "a.mp4", 10, preset="turbo")
    with pytest.raises(ConfigError, match="fps must be a positive number"):
        open_writer(tmp_path / "a.mp4", 0)
    with pytest.raises(ConfigError, match="settings cannot be saved as JSON"):
        open_writer(tmp_path / "a.mp4", 10, settings={"model": object()})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(VidgenError, match="already exists and is not empty"):
        open_writer(tmp_path / "full", 10)
    with pytest.raises(VidgenError, match="no frames were appended"):
        with open_writer(tmp_path / "empty.mp4", 10):
            pass
    assert leftovers(tmp_path) == ["full"]


def test_missing_encoder_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module.av, "codecs_available", set(av.codecs_available) - {"libvpx-vp9"})
    with pytest.raises(VidgenError, match="libvpx-vp9 encoder is missing .* write .mp4 or .gif instead"):
        write_video(tmp_path / "clip.webm", smooth_clip(t=2, h=8, w=8), 10)
    assert leftovers(tmp_path) == []


def test_png_pattern_into_existing_folder_and_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    clip = smooth_clip(t=3, h=6, w=7)
    write_video(tmp_path / "img_*.png", clip, 10)
    assert leftovers(tmp_path) == ["img_000000.png", "img_000001.png", "img_000002.png", "notes.txt", "settings.json"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "img_000002.png")), clip[2])
    (tmp_path / "empty").mkdir()
    write_video(tmp_path / "empty", clip, 10)
    assert leftovers(tmp_path / "empty") == ["000000.png", "000001.png", "000002.png", "settings.json"]


def test_to_uint8_frames_layouts_and_ranges():
    x = torch.linspace(-1, 1, 2 * 5 * 4 * 3).reshape(3, 2, 5, 4)  # x: [C, T, H, W]
    out = to_uint8_frames(x)
    assert out.dtype == np.uint8 and out.shape == (2, 5, 4, 3)
    expected = ((x.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round()
    assert np.array_equal(out, expected.astype(np.uint8))
    assert np.array_equal(to_uint8_frames(x.permute(1, 0, 2, 3)), out)  # [T, C, H, W]
    assert np.array_equal(to_uint8_frames(x.numpy().astype(np.float64)), out)
    assert to_uint8_frames(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5), layout="CTHW")[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    assert to_uint8_frames(torch.full((1, 3, 2, 2), 0.5), value_range=(0, 1)).max() == 128  # [0, 1] input
    assert to_uint8_frames(torch.zeros(3, 1, 2, 2)).shape == (1, 2, 2, 3)  # 3 channels before grey
    grey = to_uint8_frames(np.zeros((4, 4, 1), np.uint8) + 9)  # one uint8 image
    assert grey.shape == (1, 4, 4, 3) and (grey == 9).all()
    rgba = np.zeros((2, 4, 4, 4), np.uint8)
    assert to_uint8_frames(rgba).shape == (2, 4, 4, 3)
    with pytest.raises(VidgenError, match=r"cannot tell the channel axis .* \(3, 3, 8, 8\)"):
        to_uint8_frames(torch.zeros(3, 3, 8, 8))
    assert to_uint8_frames(torch.zeros(3, 3, 8, 8), layout="TCHW").shape == (3, 8, 8, 3)
    with pytest.raises(VidgenError, match="dtype int64"):
        to_uint8_frames(np.zeros((2, 4, 4, 3), np.int64))


def test_save_png_exact_and_atomic(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    save_png(tmp_path / "sub" / "img.png", img, {"step": 10})
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sub" / "img.png")), img)
    assert read_png_settings(tmp_path / "sub" / "img.png") == {"step": 10}
    save_png(tmp_path / "t.png", torch.zeros(3, 5, 6))  # float [C, H, W] in [-1, 1] -> mid grey
    assert np.asarray(Image.open(tmp_path / "t.png")).shape == (5, 6, 3)
    with pytest.raises(VidgenError, match="save_png takes one image; got 2 frames"):
        save_png(tmp_path / "two.png", np.zeros((2, 4, 4, 3), np.uint8))
    assert leftovers(tmp_path) == ["sub", "t.png"]


@pytest.mark.parametrize("name", ["long.mp4", "long.gif"])
def test_memory_does_not_grow_with_length(tmp_path, name):
    def peak_bytes(n_frames: int) -> int:
        tracemalloc.start()
        with open_writer(tmp_path / f"{n_frames}-{name}", fps=25, preset="ultrafast") as w:
            for start in range(0, n_frames, 20):
                w.append(smooth_clip(t=20, h=32, w=32, seed=start))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    short, long = peak_bytes(60), peak_bytes(600)
    assert read_av(tmp_path / f"600-{name}")[0].shape[0] == 600
    frames_bytes = 600 * 32 * 32 * 3
    assert long < short + frames_bytes / 10, (short, long)  # holding the frames would add 1.8 MB
