"""FrameSource over the real clips in ../shared/data and over files the tests make."""

import zipfile

import av
import numpy as np
import pytest
from PIL import Image

from vidgen.data.sources import (PyAVSource, compare_backends, decord_available, natural_key,
                                 open_source)
from vidgen.errors import DataError

VIDEOS = {  # name: (frames, width, height) from the data README
    "cockatoo.mp4": (280, 1280, 720), "realshort.mp4": (36, 320, 240), "test.webm": (94, 640, 480),
    "newtonscradle.gif": (36, 200, 150), "bikes.mp4": (250, 640, 272),
    "carphone_pristine.mp4": (120, 176, 144), "scene_cuts.mp4": (250, 1280, 272),
    "bigbuckbunny.mp4": (132, 1280, 720), "cityCC0.mpg": (190, 720, 405),
    "flipping_a_pancake.mkv": (310, 426, 240), "video_with_failing_audio.mp4": (280, 640, 360),
    "tree.avi": (68, 320, 240), "vtest.avi": (795, 768, 576),
}
DECORD_REFUSES = {"newtonscradle.gif", "test.webm"}

BAD = {  # entry: words its DataError must contain
    "empty.mp4": "file is empty",
    "truncated.mp4": "not a readable video",
    "truncated_faststart.mp4": "no frame could be decoded",
    "text_renamed.mp4": "not a readable video",
    "random_bytes.avi": "not a readable video",
    "audio_only.mp4": "has no video stream",
    "path_traversal.zip": "escapes the archive",
    "mixed_sizes": "frames of mixed sizes",
    "corrupt_frame": "frame_000002.jpg",
}


def _sequential(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_every_real_clip_opens_with_right_meta(shared_data, name):
    frames, w, h = VIDEOS[name]
    src = open_source(shared_data / "videos" / name)
    assert (len(src), src.meta.width, src.meta.height) == (frames, w, h)
    assert src.get([0, frames - 1]).shape == (2, h, w, 3)
    if not name.endswith((".mp4", ".mkv")) or not decord_available():
        assert src.meta.backend == "pyav" and src.meta.note  # fallback says why
    else:
        assert src.meta.backend == "decord"


@pytest.mark.skipif(not decord_available(), reason="decord not installed")
@pytest.mark.parametrize("name", sorted(set(VIDEOS) - DECORD_REFUSES))
def test_backends_agree_or_fall_back(shared_data, name):
    path = shared_data / "videos" / name
    pyav = PyAVSource(path)
    try:
        dec = open_source(path, backend="decord")
    except DataError:
        pytest.fail(f"decord should open {name}")
    reason = compare_backends(pyav, dec)
    if name == "cityCC0.mpg":  # decord is silently 12 frames off there: must be caught
        assert "differs" in reason
        assert open_source(path).meta.backend == "pyav"
        return
    assert reason == ""
    n = len(pyav)
    idx = sorted({0, 1, n // 3, n // 2, n - 2, n - 1})
    mad = np.abs(pyav.get(idx).astype(float) - dec.get(idx).astype(float)).mean()
    assert mad <= 2.0


@pytest.mark.parametrize("name", sorted(DECORD_REFUSES))
def test_decord_refusals_give_data_error(shared_data, name):
    if not decord_available():
        pytest.skip("decord not installed")
    with pytest.raises(DataError, match="decord cannot open"):
        open_source(shared_data / "videos" / name, backend="decord")
    assert open_source(shared_data / "videos" / name).meta.backend == "pyav"


@pytest.mark.parametrize("name", ["realshort.mp4", "tree.avi", "test.webm", "cityCC0.mpg",
                                  "newtonscradle.gif", "bikes.mp4"])
def test_pyav_random_access_is_frame_exact(shared_data, name):
    path = shared_data / "videos" / name
    ref = _sequential(path)
    src = PyAVSource(path)
    rng = np.random.default_rng(1)
    idx = list(rng.integers(0, len(ref), 12)) + [len(ref) - 1, 0, 5, 4]  # backwards jumps too
    got = src.get(idx)
    for k, i in enumerate(idx):
        assert np.array_equal(got[k], ref[i]), f"{name} frame {i}"


def test_vfr_and_missing_duration(shared_data):
    tree = open_source(shared_data / "videos" / "tree.avi").meta
    assert tree.vfr and tree.num_frames == 68 and tree.avg_fps < tree.fps
    webm = open_source(shared_data / "videos" / "test.webm").meta
    assert webm.num_frames == 94 and webm.duration == pytest.approx(94 / 30.3, rel=0.05)
    assert not open_source(shared_data / "videos" / "bikes.mp4").meta.vfr


@pytest.mark.parametrize("entry", sorted(BAD))
def test_bad_inputs_raise_documented_message(shared_data, entry):
    path = shared_data / "bad" / entry
    with pytest.raises(DataError) as info:
        open_source(path).get([0, 1, 2, 3])
    assert BAD[entry] in str(info.value)
    assert entry in str(info.value) or str(path) in str(info.value)


def test_folder_natural_sort_gray_alpha(tmp_path):
    Image.fromarray(np.full((8, 10), 200, np.uint8), "L").save(tmp_path / "f_10.png")
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "f_2.png")
    assert sorted(["f_10", "f_2"], key=natural_key) == ["f_2", "f_10"]
    src = open_source(tmp_path)
    x = src.get([0, 1])
    assert x.shape == (2, 8, 10, 3) and x.dtype == np.uint8
    assert tuple(x[0, 0, 0]) == (128, 0, 0)      # red at half alpha over black
    assert tuple(x[1, 0, 0]) == (200, 200, 200)  # gray -> RGB


def test_zip_source_and_exif_rotation(tmp_path):
    img = np.zeros((6, 10, 3), np.uint8)
    img[0, 0] = 255
    im = Image.fromarray(img)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "a.jpg", exif=exif, quality=100)
    with zipfile.ZipFile(tmp_path / "frames.zip", "w") as z:
        z.write(tmp_path / "a.jpg", "clip/000.jpg")
    src = open_source(tmp_path / "frames.zip")
    assert (src.meta.width, src.meta.height) == (6, 10)
    assert src.get([0]).shape == (1, 10, 6, 3)


def test_video_rotation_metadata_is_honoured(tmp_path):
    path = tmp_path / "rot.mp4"
    frame = np.zeros((32, 48, 3), np.uint8)
    frame[:8, :8] = 255  # bright top-left corner
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        s.set_display_rotation(90)  # stored frame must be shown turned 90 degrees counter-clockwise
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    src = open_source(path, backend="pyav")
    assert src.meta.rotation == 90 and (src.meta.width, src.meta.height) == (32, 48)
    x = src.get([1])[0]
    assert x.shape == (48, 32, 3)
    assert x[-4:, :4].mean() > 200 and x[:4, :4].mean() < 50  # top-left went to bottom-left
    if decord_available():
        assert np.abs(open_source(path).get([1])[0].astype(int) - x).mean() < 2


def test_missing_path_and_bad_backend(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_source(tmp_path / "nope.mp4")
    with pytest.raises(DataError, match="unknown backend"):
        open_source(tmp_path, backend="opencv")
