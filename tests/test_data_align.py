"""Frame registration (issue 16, item 4): real webcam frames given a known synthetic sub-pixel
jitter are registered back to within 0.5 px, by `vidgen data prepare --align` (shifts in the
manifest, frames cropped to the common valid rectangle) and by the training datasets."""

import zipfile

import numpy as np
import pytest
from PIL import Image

from vidgen.cli import main
from vidgen.data.align import MIN_CONFIDENCE, Registrar, register, settle
from vidgen.data.datasets import TimedFrameDataset
from vidgen.data.prepare import load_manifest
from vidgen.data.resize import crop_resize

MARGIN = 8  # pixels cut from each side, so a jitter of up to 4 px never reaches outside the frame


def jitter(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """A window of the frame, MARGIN in from each side, displaced by (-dx, -dy) with bicubic
    resampling: the scene's content moves by (+dx, +dy), as when the camera shakes."""
    h, w = frame.shape[:2]
    box = (MARGIN - dx, MARGIN - dy, w - MARGIN - dx, h - MARGIN - dy)
    return crop_resize(frame, (h - 2 * MARGIN, w - 2 * MARGIN), box)


@pytest.fixture(scope="module")
def chamonix(shared_data):
    files = sorted((shared_data / "timelapse" / "chamonix").glob("*.jpg"))[::2]  # 20 frames, May to Sept
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    rng = np.random.default_rng(16)
    shifts = rng.uniform(-4, 4, size=(len(frames), 2))  # known sub-pixel jitter (dx, dy)
    return files, frames, shifts


def residual(est_jittered: np.ndarray, est_plain: np.ndarray, applied: np.ndarray) -> np.ndarray:
    """|recovered jitter - applied jitter| per frame, in pixels. The estimates of the plain
    frames hold the camera's own motion between captures, which both share; the reference
    frame's jitter (and so any constant) is removed by centring on the median."""
    d = est_jittered - est_plain - applied
    d -= np.median(d, axis=0)
    return np.hypot(d[:, 0], d[:, 1])


def test_registration_of_real_frames_with_known_subpixel_jitter(chamonix):
    _, frames, s = chamonix
    jittered = [jitter(f, *d) for f, d in zip(frames, s)]
    plain = [jitter(f, 0, 0) for f in frames]
    ref = len(frames) // 2
    al = register([np.stack(jittered)], jittered[ref], ref)
    al0 = register([np.stack(plain)], plain[ref], ref)
    assert not al.unreliable and not al0.unreliable
    r = residual(al.shifts, al0.shifts, s)
    assert r.max() <= 0.5  # measured: max 0.10, median 0.04 px
    assert np.abs(s - s[ref]).max() > 3  # the jitter is several pixels: not a trivial case
    # each frame against a jittered copy of itself: the estimator alone
    own = [Registrar(p).shift(j) for p, j in zip(plain, jittered)]
    err = [np.hypot(dx - sx, dy - sy) for (dx, dy, _), (sx, sy) in zip(own, s)]
    assert max(err) <= 0.5  # measured: max 0.10, median 0.06 px
    assert min(c for _, _, c in own) > 0.5  # a pure translation correlates strongly


def test_prepare_align_records_shifts_and_crops_to_the_common_area(tmp_path, chamonix, capsys):
    files, frames, s = chamonix
    files, frames, s = files[:12], frames[:12], s[:12]
    for name, data in (("shaky", [jitter(f, *d) for f, d in zip(frames, s)]),
                       ("steady", [jitter(f, 0, 0) for f in frames])):
        (tmp_path / name).mkdir()
        for f, img in zip(files, data):  # the real names keep the capture times
            Image.fromarray(img).save(tmp_path / name / f.name, quality=95)
    res = ["--resolution", "96x128"]
    for name in ("shaky", "steady"):
        assert main(["data", "prepare", str(tmp_path / name), "--out", str(tmp_path / f"{name}_ds"),
                     "--align", *res]) == 0
    assert main(["data", "prepare", str(tmp_path / "shaky"), "--out", str(tmp_path / "unaligned"), *res]) == 0
    err = capsys.readouterr().err
    assert "note" in err and "aligned to frame" in err
    shaky, steady = (load_manifest(tmp_path / f"{n}_ds")["clips"][0] for n in ("shaky", "steady"))
    assert len(shaky["times"]) == 12 and shaky["times"] == steady["times"]
    a = shaky["align"]
    assert len(a["shifts_xy"]) == 12 and a["reference"] in range(12) and not a["unreliable"]
    r = residual(np.array(a["shifts_xy"]), np.array(steady["align"]["shifts_xy"]), s)
    assert r.max() <= 0.5  # through JPEG: measured max 0.07 px
    x0, y0, x1, y1 = a["valid_rect_xyxy"]  # every frame covers it, and it lost about the jitter
    h, w = frames[0].shape[0] - 2 * MARGIN, frames[0].shape[1] - 2 * MARGIN
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and (x1 - x0) > w - 10 and (y1 - y0) > h - 10



def _shard(path):
    with zipfile.ZipFile(path) as z:
        return np.stack([np.asarray(Image.open(z.open(n))).astype(float) for n in sorted(z.namelist())])


def test_prepare_align_makes_jittered_copies_of_one_frame_identical(tmp_path, chamonix):
    files, frames, s = chamonix
    still = tmp_path / "still"
    still.mkdir()
    for f, d in zip(files[:10], s[:10]):  # one real frame, ten jitters, ten capture times
        Image.fromarray(jitter(frames[4], *d)).save(still / f.name, quality=95)
    res = ["--resolution", "96x128"]
    assert main(["data", "prepare", str(still), "--out", str(tmp_path / "aligned"), "--align", *res]) == 0
    assert main(["data", "prepare", str(still), "--out", str(tmp_path / "raw"), *res]) == 0
    a = load_manifest(tmp_path / "aligned")["clips"][0]["align"]
    r = a["reference"]
    est = np.array(a["shifts_xy"])
    assert np.hypot(*(est - (s[:10] - s[r])).T).max() <= 0.5  # measured max 0.09 px
    aligned, raw = _shard(tmp_path / "aligned" / "96x128" / "000000.zip"), \
        _shard(tmp_path / "raw" / "96x128" / "000000.zip")
    spread_aligned = np.abs(aligned - aligned[r]).mean(axis=(1, 2, 3))
    spread_raw = np.abs(raw - raw[r]).mean(axis=(1, 2, 3))
    moved = np.hypot(*(s[:10] - s[r]).T) > 2.0
    assert moved.sum() >= 5
    # measured: aligned copies differ from the reference by ~1 level (JPEG, resampling), the
    # unaligned ones by several
    assert spread_aligned.max() < 2.0 and np.all(spread_aligned[moved] < 0.4 * spread_raw[moved])


def test_timed_frames_align_for_training(tmp_path, chamonix):
    files, frames, s = chamonix
    files, frames, s = files[:8], frames[:8], s[:8]
    for name, data in (("shaky", [jitter(f, *d) for f, d in zip(frames, s)]),
                       ("steady", [jitter(f, 0, 0) for f in frames])):
        (tmp_path / name).mkdir()
        for f, img in zip(files, data):
            Image.fromarray(img).save(tmp_path / name / f"{f.stem}.png")  # lossless this time
    shaky = TimedFrameDataset(tmp_path / "shaky", align=True)
    steady = TimedFrameDataset(tmp_path / "steady", align=True)
    r = residual(shaky.sources.alignments[0].shifts, steady.sources.alignments[0].shifts, s)
    assert r.max() <= 0.5
    x0, y0, x1, y1 = shaky.sources.alignments[0].valid_rect
    frame = shaky[3][0]
    assert frame.shape == (3, int(y1 - y0), int(x1 - x0))  # the common valid rectangle, native scale
    h, w = frames[0].shape[:2]
    assert TimedFrameDataset(tmp_path / "shaky")[3][0].shape == (3, h - 2 * MARGIN, w - 2 * MARGIN)
    # `timelapse train --align` (data.align) letterboxes the aligned frames
    from timelapse.frames import TimelapseFrames

    tl = TimelapseFrames(tmp_path / "shaky", 64, align=True)
    assert tl.frame_size == (int(y1 - y0), int(x1 - x0)) and len(tl) == 8


def test_settle_distrusts_weak_or_huge_estimates():
    shifts = np.array([[0.0, 0.0], [1.0, 0.5], [40.0, 3.0], [1.5, 0.5], [2.0, 1.0]])
    conf = np.array([1.0, 0.5, 0.5, 0.01, 0.4])
    al = settle(shifts, conf, (100, 100), reference=0)
    assert al.unreliable == [2, 3]  # 40 px is beyond a quarter of the frame; 0.01 is no peak
    assert al.shifts[2].tolist() == [1.0, 0.5] and al.shifts[3].tolist() == [2.0, 1.0]  # nearest believed
    assert al.valid_rect == (0.0, 0.0, 98.0, 99.0)
    assert al.box(4, (10.0, 10.0, 20.0, 20.0)) == (12.0, 11.0, 22.0, 21.0)
    # a black frame has no correlation peak to speak of
    rng = np.random.default_rng(0)
    scene = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    assert Registrar(scene).shift(np.zeros_like(scene))[2] < MIN_CONFIDENCE
