"""Bounded memory on any input (issue 18): pixel limits read from headers before decoding,
reads in chunks sized by bytes, bounds on --resolution / --fps / counts, symlinks that leave
the input, upscaling warnings, and `data inspect` writing beside the user, not the data."""

import json
import re
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidgen.cli import main
from vidgen.data import meta
from vidgen.data.datasets import ClipDataset, TimedFrameDataset
from vidgen.data.manifest import parse_resolution
from vidgen.data.prepare import PrepareConfig, load_manifest, prepare
from vidgen.data.sources import FrameSource, open_source
from vidgen.data.synthetic import make_drive
from vidgen.errors import DataError


def bomb_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A 60-byte PNG whose header claims ``width`` x ``height`` RGB pixels (no real data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidgen: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return make_drive(tmp_path_factory.mktemp("drive"), seed=5, frames=12, size=(36, 48), videos=1, fps=10)[0]


def test_bomb_png_is_refused_from_its_header_everywhere(tmp_path, drive, capsys):
    frames = tmp_path / "frames"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(frames.mkdir() or frames / "20210301_120000.png")
    bomb_png(frames / "20210301_130000.png")
    assert (frames / "20210301_130000.png").stat().st_size < 100
    claim = "claims 10000000000 pixels per frame (10000 megapixels), over the limit of 150"
    # prepare: the clip is skipped with one line; with nothing else usable, one error line
    assert main(["data", "prepare", str(frames), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert claim in err and "Traceback" not in err and "DecompressionBomb" not in err
    assert main(["data", "prepare", str(frames), str(drive), "--out", str(tmp_path / "ds"),
                 "--resolution", "16x16"]) == 0
    report = json.loads((tmp_path / "ds" / "report.json").read_text())
    assert [s["path"] for s in report["skipped"]] == [str(frames)] and claim in report["skipped"][0]["reason"]
    capsys.readouterr()
    # inspect
    assert main(["data", "inspect", str(frames), "--out", str(tmp_path / "sheet.png")]) == 2
    assert claim in _one_error_line(capsys.readouterr().err) and not (tmp_path / "sheet.png").exists()
    # training datasets on the raw folder
    with pytest.raises(DataError, match=re.escape(claim)):
        TimedFrameDataset(tmp_path / "frames")
    with pytest.raises(DataError, match=re.escape(claim)):
        ClipDataset(tmp_path / "frames", clip_len=2)
    # a zip of frames, and EXIF capture times, read headers through the same check
    with pytest.raises(DataError, match=re.escape(claim)):
        import zipfile
        with zipfile.ZipFile(tmp_path / "f.zip", "w") as z:
            z.write(frames / "20210301_130000.png", "000000.png")
        open_source(tmp_path / "f.zip")


def test_pixel_limit_is_the_projects_and_can_be_raised(tmp_path, drive, monkeypatch):
    big = bomb_png(tmp_path / "big" / "a.png", 13000, 13000)  # 169 MP: over 150, under PIL's own 179
    with pytest.raises(DataError, match="169 megapixels\\), over the limit of 150"):
        open_source(big.parent)
    monkeypatch.setenv("VIDGEN_MAX_PIXELS", "200000000")
    assert open_source(big.parent).meta.width == 13000  # the header passes; nothing decoded yet
    # videos: the stream's size from the container header
    monkeypatch.setenv("VIDGEN_MAX_PIXELS", "1000")
    with pytest.raises(DataError, match="claims 48x36 pixels per frame"):
        open_source(drive, backend="pyav")
    monkeypatch.setenv("VIDGEN_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="VIDGEN_MAX_PIXELS='lots'"):
        open_source(drive, backend="pyav")


def test_frames_are_read_in_chunks_sized_by_bytes(tmp_path, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):  # 5 frames of 600x800 (1.44 MB each as RGB)
        Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(folder / f"f{k}.png")
    monkeypatch.setattr(meta, "CHUNK_BYTES", 3_000_000)  # two frames at a time
    assert meta.frames_per_chunk(600, 800) == 2 and meta.frames_per_chunk(12000, 12000) == 1
    largest = []
    real_get = FrameSource.get

    def spy(self, indices):
        out = real_get(self, indices)
        largest.append(out.nbytes)
        return out

    monkeypatch.setattr(FrameSource, "get", spy)
    prepare(PrepareConfig(inputs=[str(folder)], out=str(tmp_path / "ds"), resolutions=[(30, 40)]), log=lambda m: None)
    assert largest and max(largest) <= 3_000_000
    largest.clear()
    item = ClipDataset(folder, clip_len=5, resolution=(30, 40), random_start=False)[0]
    assert item.shape == (3, 5, 30, 40) and max(largest) <= 3_000_000


def test_resolution_fps_and_count_bounds(tmp_path, drive, capsys):
    assert parse_resolution("4096x8192") == (4096, 8192)
    for bad in ("100000x100000", "8193x16", "6000x6000"):
        with pytest.raises(DataError, match="too large"):
            parse_resolution(bad)
    cases = [(["--resolution", "100000x100000"], "too large"), (["--fps", "0"], "--fps 0"),
             (["--fps", "-5"], "--fps -5"), (["--fps", "nan"], "--fps nan"), (["--workers", "-1"], "--workers -1"),
             (["--quality", "101"], "--quality 101"), (["--min-frames", "0"], "--min-frames 0"),
             (["--trim", "0:inf"], "finite"), (["--interval", "0s"], "--interval '0s'"),
             (["--start", "2023-06-13T03:11:46"], "--start needs --interval"),
             (["--start", "yesterday", "--interval", "60s"], "--start 'yesterday'")]
    for extra, words in cases:
        assert main(["data", "prepare", str(drive), "--out", str(tmp_path / "ds"), *extra]) == 2, extra
        assert words in _one_error_line(capsys.readouterr().err), extra
    assert not (tmp_path / "ds").exists() and not list(tmp_path.iterdir())


def test_symlinks_leaving_the_input_are_skipped_with_a_line(tmp_path, drive, capsys):
    """`data prepare` copies what it reads into a dataset: a link out of the input (to a
    private file, say) is skipped and named unless --follow-symlinks."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(outside / "secret.png")
    inp = tmp_path / "input"
    (inp / "clips").mkdir(parents=True)
    os.link(drive, inp / "clips" / "a.mp4")
    os.symlink(drive, inp / "clips" / "link_out.mp4")          # a video outside the input
    os.symlink(inp / "clips" / "a.mp4", inp / "clips" / "link_in.mp4")  # inside: followed
    os.symlink(inp, inp / "clips" / "loop")                    # a loop back to the input
    frames = inp / "frames"
    frames.mkdir()
    for k in range(3):
        Image.new("RGB", (8, 8), (0, 40 * k, 0)).save(frames / f"f{k}.png")
    os.symlink(outside / "secret.png", frames / "f3.png")      # a frame outside the input
    assert main(["data", "prepare", str(inp), "--out", str(tmp_path / "ds"), "--resolution", "8x8"]) == 0
    err = capsys.readouterr().err
    for name in ("link_out.mp4", "f3.png"):
        line = next(ln for ln in err.splitlines() if name in ln)
        assert line.startswith("skip ") and "outside the input folder" in line and "not followed" in line
    assert "symlink loop" in err and "Traceback" not in err
    m = load_manifest(tmp_path / "ds")
    assert sorted(c["name"] for c in m["clips"]) == ["a", "frames", "link_in"]
    assert next(c for c in m["clips"] if c["name"] == "frames")["num_frames"] == 3
    # asked for, they are read (the loop still is not)
    assert main(["data", "prepare", str(inp), "--out", str(tmp_path / "ds2"), "--resolution", "8x8",
                 "--follow-symlinks"]) == 0
    m = load_manifest(tmp_path / "ds2")
    assert sorted(c["name"] for c in m["clips"]) == ["a", "frames", "link_in", "link_out"]
    assert next(c for c in m["clips"] if c["name"] == "frames")["num_frames"] == 4
    assert "symlink loop" in capsys.readouterr().err
    # a training folder is the user's own: its links are followed unless told otherwise
    assert len(ClipDataset(inp, clip_len=2, resolution=(8, 8))) == 4
    ds = ClipDataset(inp, clip_len=2, resolution=(8, 8), follow_symlinks=False)
    assert len(ds) == 3 and any("f3.png" in s["path"] for s in ds.sources.skipped)


def test_tiny_video_upscaled_gives_a_warning(tmp_path, capsys):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for k in range(3):
        Image.new("RGB", (1, 1), (k, k, k)).save(tiny / f"f{k}.png")
    assert main(["data", "prepare", str(tiny), "--out", str(tmp_path / "ds"), "--resolution", "36x64"]) == 0
    err = capsys.readouterr().err
    assert f"warning {tiny}: its 1x1 frames are upscaled x64.0 to 36x64" in err
    assert json.loads((tmp_path / "ds" / "report.json").read_text())["warnings"][0]["path"] == str(tiny)
    make_drive(tmp_path / "v", seed=0, frames=4, size=(72, 128), videos=1)
    assert main(["data", "prepare", str(tmp_path / "v"), "--out", str(tmp_path / "ds2"), "--resolution", "36x64"]) == 0
    assert "upscaled" not in capsys.readouterr().err  # a downscale says nothing


def test_inspect_writes_to_the_current_folder_or_out(tmp_path, drive, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "inspect", str(drive)]) == 0
    assert (tmp_path / f"{drive.name}_contact_sheet.png").is_file()
    assert not (drive.parent / "contact_sheet.png").exists() and not list(drive.parent.glob("*.png"))
    capsys.readouterr()
    ro = tmp_path / "readonly"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    assert main(["data", "inspect", str(drive), "--out", str(ro / "s.png")]) == 2
    assert "read-only" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setattr(os, "access", real_access)

    def refuse(*a, **k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr("vidgen.render.writer.Image.Image.save", refuse)
    assert main(["data", "inspect", str(drive), "--out", str(ro / "s.png")]) == 2
    assert "Read-only file system" in _one_error_line(capsys.readouterr().err)
    assert not list(ro.iterdir())


def test_large_images_are_copied_out_of_pil_in_bands():
    from vidgen.data.images import to_array, to_rgb

    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (301, 97, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    for block in (97, 1000, 97 * 301, 1 << 24):  # one row, several rows, all at once
        assert np.array_equal(to_array(im, block), a)
    assert np.array_equal(to_array(im.convert("L"), 500), np.asarray(im.convert("L")))
    assert np.array_equal(to_rgb(im), a)
