"""Protocols take exactly the frames they promise; sampling policies; frame weighting."""

import numpy as np
import pytest
import torch

from vidgen.errors import VidgenError
from vidgen.metrics import image, video
from vidgen.metrics.detectors import Detector, RandomDetector
from vidgen.metrics.inputs import ArrayVideo, FakeVideos, RealVideos


class RecordingVideo(ArrayVideo):
    """Frame i has all pixels = (video id, i % 256, 0); remembers every requested index."""

    def __init__(self, vid: int, length: int):
        frames = np.zeros((length, 4, 4, 3), np.uint8)
        frames[..., 0] = vid
        frames[..., 1] = (np.arange(length) % 256)[:, None, None]
        super().__init__(frames)
        self.requests = []

    def get(self, indices):
        self.requests.append(np.asarray(indices).tolist())
        return super().get(indices)


def _fake_recorder():
    calls = []

    def generate(seed, num_frames):
        calls.append((seed, num_frames))
        x = np.zeros((num_frames, 4, 4, 3), np.uint8)
        x[..., 1] = np.arange(num_frames)[:, None, None] % 256
        return x

    return FakeVideos("callable", "rec", generate=generate), calls


class FirstPixel(Detector):
    """Reports the frame numbers it was shown (green channel of pixel 0 of each frame)."""

    temporal, sha256 = True, "f" * 64

    def __init__(self, frames: int):
        super().__init__()
        self.feature_dim = frames
        self.seen = []

    def features(self, x):  # x: [B, 3, T, H, W]
        self.seen.append(x[:, 1, :, 0, 0].clone())
        return x[:, 1, :, 0, 0].float()


@pytest.mark.parametrize("name,count,frames,stride", [
    ("fvd2048_16f", 2048, 16, 1), ("fvd2048_128f", 2048, 128, 1),
    ("fvd2048_128f_subsample8f", 2048, 16, 8), ("fvd12_24f_subsample6f", 12, 4, 6)])
def test_fvd_protocols_take_exactly_the_frames_they_promise(name, count, frames, stride):
    proto = video.fvd_protocol(name)
    assert (proto.num_real, proto.num_fake, proto.num_frames, proto.stride) == (count, count, frames, stride)
    proto = video.ClipProtocol(name, 10, 7, proto.span, proto.stride)  # same frames, fewer clips
    vids = [RecordingVideo(i, 130 + 7 * i) for i in range(4)]
    real = RealVideos(vids, "m")
    det = FirstPixel(frames)
    r = video.real_clip_stats(proto, real, det, seed=1, batch_size=3, progress=False)
    assert r.num_items == 10 and sum(len(v.requests) for v in vids) == 10
    for v in vids:
        for req in v.requests:
            assert len(req) == frames and np.all(np.diff(req) == stride)
            assert req[0] >= 0 and req[-1] < len(v)
    fake, calls = _fake_recorder()
    det.seen.clear()
    f = video.fake_clip_stats(proto, fake, det, seed=100, batch_size=4, progress=False)
    assert f.num_items == 7 and [s for s, _ in calls] == list(range(100, 107))
    shown = torch.cat(det.seen)
    assert shown.shape == (7, frames)
    assert torch.all(shown == torch.arange(0, frames * stride, stride))  # from frame 0


def test_subsample_name_must_divide():
    with pytest.raises(VidgenError, match="multiple"):
        video.fvd_protocol("fvd16_100f_subsample8f")


def test_per_video_policy_takes_one_clip_per_video():
    lengths = [50, 200, 10, 80, 300]
    clips = video.sample_real_clips(lengths, 4, 40, "per_video", seed=0)  # video 2 is too short
    assert sorted(v for v, _ in clips) == [0, 1, 3, 4]
    clips = video.sample_real_clips(lengths, 8, 40, "per_video", seed=0)
    assert sorted(v for v, _ in clips) == [0, 0, 1, 1, 3, 3, 4, 4]
    assert all(0 <= s <= lengths[v] - 40 for v, s in clips)


def test_uniform_policy_is_uniform_over_clips():
    lengths = [100, 1000]
    clips = video.sample_real_clips(lengths, 4000, 91, "uniform", seed=0)
    share = np.mean([v == 1 for v, _ in clips])
    assert abs(share - 910 / 920) < 0.01  # 10 vs 910 valid starts
    assert all(0 <= s <= lengths[v] - 91 for v, s in clips)
    with pytest.raises(VidgenError, match="200 frames"):
        video.sample_real_clips([10, 20], 1, 200, "uniform", seed=0)
    with pytest.raises(VidgenError, match="policy"):
        video.ClipProtocol("x", 1, 1, 4, real_policy="random")


def test_real_frames_weighted_by_inverse_video_length():
    class Mean(Detector):
        name, feature_dim, sha256 = "mean", 1, "m" * 64

        def features(self, x):
            return x[:, 0, 0, :1].float()

    short = np.zeros((2, 3, 3, 3), np.uint8)
    long = np.full((8, 3, 3, 3), 100, np.uint8)
    real = RealVideos([ArrayVideo(short), ArrayVideo(long)], "m")
    stats = image.real_frame_stats(Mean(), real, 0, 0, batch_size=3, progress=False)
    mean, cov = stats.mean_cov()
    assert stats.num_items == 10
    assert mean[0] == pytest.approx(50.0)  # each video counts once, not 2 vs 8 frames
    assert cov[0, 0] == pytest.approx(2500.0)


def test_generated_frames_come_from_frame_0_clips():
    fake, calls = _fake_recorder()
    det = RandomDetector(4)
    s = image.fake_frame_stats(det, fake, num_fake=40, clip_frames=16, reservoir=0, seed=5,
                               batch_size=7, progress=False)
    assert s.num_items == 40 and calls == [(5, 16), (6, 16), (7, 8)]


def test_frame_protocol_names():
    assert image.frame_protocol("fid50k_full").num_fake == 50_000
    assert image.frame_protocol("fid300_full").num_fake == 300
    assert image.frame_protocol("fd_dinov2").detector == "dinov2"
    assert image.frame_protocol("kid2k").reservoir > 0 and image.frame_protocol("kid2k").num_fake == 2000
    p, f = image.frame_protocol("pr"), image.frame_protocol("fid50k_full")
    assert p.pass_key() == f.pass_key()  # pr / kid share FID's feature pass
    assert image.frame_protocol("fvd2048_16f") is None


def test_colour_change_curve():
    x = np.zeros((3, 8, 8, 3), np.uint8)
    x[1] = 255
    x[2, :4] = 255
    np.testing.assert_allclose(video.colour_change_curve(x), [1.0, 0.0, 0.5])
    h = video.colour_histograms(np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8))
    assert h.shape == (2, 8000) and np.allclose(h.sum(1), 1)
    proto = video.colour_protocol("colour_change6_12f")
    assert (proto.num_clips, proto.num_frames, proto.bins) == (6, 12, 20)
    real = RealVideos([ArrayVideo(np.repeat(x[:1], 20, 0))] * 3, "m")   # static real videos
    fake = FakeVideos("callable", "flip", generate=lambda seed, n: np.stack(
        [x[0] if t == 0 else x[1] for t in range(n)]))                # changes completely at t = 1
    rc, fc, info = video.colour_curves(proto, real, fake, seed=0, fake_seed=0)
    assert np.allclose(rc, 1) and fc[0] == 1 and np.all(fc[1:] == 0)
    assert info["num_real"] == info["num_fake"] == 6
