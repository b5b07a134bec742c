"""Clip protocols: FVD variants and the colour-change curve (docs/METHODS.md section 9).

`fvd{N}_{L}f` compares N real and N generated clips of L consecutive frames (stride 1);
`fvd{N}_{L}f_subsample{S}f` takes every S-th frame of an L-frame span, L / S frames
(fvd2048_128f_subsample8f: 16 frames at stride 8). Generated clips always start at frame 0. Real clips follow an
explicit policy, recorded in the report because published numbers differ by it:
"per_video" (one clip per video, random start, videos cycled in a seeded random order) or
"uniform" (uniform over every valid clip start of every video).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from vidgen.data.benchmarks import REAL_POLICIES
from vidgen.errors import VidgenError
from vidgen.metrics.detectors import Detector
from vidgen.metrics.extract import extract
from vidgen.metrics.frechet import FeatureStats
from vidgen.metrics.inputs import FakeVideos, RealVideos

POLICIES = REAL_POLICIES  # defined with the benchmark schema (vidgen.data.benchmarks)
_FVD = re.compile(r"^fvd(\d+)_(\d+)f(?:_subsample(\d+)f)?$")
_COLOUR = re.compile(r"^colou?r_change(?:(\d+)_(\d+)f)?$")


@dataclass(frozen=True)
class ClipProtocol:
    """`num_real` real and `num_fake` generated clips; each clip is the frames
    `offsets = 0, stride, 2 stride, ... < span` after its start (generated: start 0)."""

    name: str
    num_real: int
    num_fake: int
    span: int
    stride: int = 1
    real_policy: str = "per_video"
    detector: str = "i3d"

    def __post_init__(self):
        if self.real_policy not in POLICIES:
            raise VidgenError(f"real clip policy {self.real_policy!r}: use one of {', '.join(POLICIES)}")
        assert self.num_real > 0 and self.num_fake > 0 and self.span > 0 and self.stride > 0

    @property
    def offsets(self) -> np.ndarray:
        return np.arange(0, self.span, self.stride)

    @property
    def num_frames(self) -> int:
        return len(self.offsets)

    @property
    def needed(self) -> int:
        """Frames a video must have for one clip."""
        return int(self.offsets[-1]) + 1

    def describe(self) -> dict:
        return {**asdict(self), "frames_per_clip": self.num_frames,
                "frame_offsets": self.offsets.tolist(), "fake_start": 0}


def fvd_protocol(name: str, real_policy: str = "per_video") -> ClipProtocol | None:
    m = _FVD.match(name)
    if not m:
        return None
    count, span, sub = int(m[1]), int(m[2]), int(m[3] or 0)
    if sub:  # "subsample{K}f": every K-th frame of the span (128f_subsample8f: 16 frames)
        if span % sub:
            raise VidgenError(f"metric {name}: the span ({span}) must be a multiple of the stride ({sub})")
        return ClipProtocol(name, count, count, span, sub, real_policy)
    return ClipProtocol(name, count, count, span, 1, real_policy)


def sample_real_clips(lengths: list[int], n: int, needed: int, policy: str,
                      seed: int) -> list[tuple[int, int]]:
    """n (video index, start frame) pairs, each clip needing `needed` frames."""
    rng = np.random.default_rng(seed)
    valid = np.array([i for i, length in enumerate(lengths) if length >= needed], dtype=np.int64)
    if len(valid) == 0:
        raise VidgenError(f"no real video has the {needed} frames one clip needs "
                          f"(longest: {max(lengths, default=0)})")
    room = np.array([lengths[i] - needed + 1 for i in valid], dtype=np.int64)  # starts per video
    if policy == "per_video":
        order = np.concatenate([rng.permutation(len(valid)) for _ in range(-(-n // len(valid)))])[:n]
        starts = rng.integers(0, room[order])
        return [(int(valid[v]), int(s)) for v, s in zip(order, starts)]
    if policy == "uniform":
        total = int(room.sum())
        flat = rng.choice(total, size=n, replace=n > total)
        ends = np.cumsum(room)
        v = np.searchsorted(ends, flat, side="right")
        starts = flat - (ends[v] - room[v])
        return [(int(valid[a]), int(s)) for a, s in zip(v, starts)]
    raise VidgenError(f"real clip policy {policy!r}: use one of {', '.join(POLICIES)}")


def real_clip_chunks(real: RealVideos, clips: list[tuple[int, int]], offsets: np.ndarray):
    for vid, start in clips:
        yield real.videos[vid].get(start + offsets)[None], np.ones(1)


def fake_order(fake: FakeVideos, n: int, seed: int) -> list[int]:
    """Which generated video / seed each of the n clips uses."""
    if fake.generate is not None:
        return [seed + i for i in range(n)]
    if len(fake.videos) < n:
        raise VidgenError(f"{fake.path}: {len(fake.videos)} generated videos, the protocol needs {n}")
    return sorted(np.random.default_rng(seed).permutation(len(fake.videos))[:n].tolist())


def fake_clip_chunks(fake: FakeVideos, order: list[int], offsets: np.ndarray):
    for k in order:
        yield fake.clip(k, k, offsets)[None], np.ones(1)


def real_clip_stats(proto: ClipProtocol, real: RealVideos, detector: Detector, seed: int,
                    batch_size: int, reservoir: int = 0, progress: bool = True) -> FeatureStats:
    clips = sample_real_clips(real.lengths(), proto.num_real, proto.needed, proto.real_policy, seed)
    stats = FeatureStats(detector.feature_dim, reservoir, seed, detector.device)
    extract(detector, real_clip_chunks(real, clips, proto.offsets), stats, batch_size,
            len(clips), f"{proto.name} real", progress)
    stats.meta = {"count": len(clips), "seed": seed, "policy": proto.real_policy,
                  "distinct_videos": len({v for v, _ in clips})}
    return stats


def fake_clip_stats(proto: ClipProtocol, fake: FakeVideos, detector: Detector, seed: int,
                    batch_size: int, reservoir: int = 0, progress: bool = True) -> FeatureStats:
    order = fake_order(fake, proto.num_fake, seed)
    stats = FeatureStats(detector.feature_dim, reservoir, seed, detector.device)
    extract(detector, fake_clip_chunks(fake, order, proto.offsets), stats, batch_size,
            len(order), f"{proto.name} generated", progress)
    stats.meta = {"count": len(order), "seeds" if fake.generate else "videos": [order[0], order[-1]]}
    return stats


# ---------------------------------------------------------------------- colour change
@dataclass(frozen=True)
class ColourProtocol:
    """Mean RGB-histogram intersection between frame 0 and frame t over `num_clips` clips."""

    name: str = "colour_change"
    num_clips: int = 1000
    num_frames: int = 128
    bins: int = 20
    real_policy: str = "per_video"


def colour_protocol(name: str, real_policy: str = "per_video") -> ColourProtocol | None:
    m = _COLOUR.match(name)
    if not m:
        return None
    if m[1]:
        return ColourProtocol(name, int(m[1]), int(m[2]), real_policy=real_policy)
    return ColourProtocol(name, real_policy=real_policy)


def colour_histograms(frames: np.ndarray, bins: int = 20) -> np.ndarray:
    """frames: uint8 [T, H, W, 3] -> normalised joint RGB histograms [T, bins^3]."""
    q = (frames.astype(np.int64) * bins) >> 8                         # [T, H, W, 3] in [0, bins)
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]           # [T, H, W]
    t = len(frames)
    idx = idx.reshape(t, -1) + (np.arange(t) * bins ** 3)[:, None]
    hist = np.bincount(idx.ravel(), minlength=t * bins ** 3).reshape(t, bins ** 3)
    return hist / hist.sum(axis=1, keepdims=True)


def colour_change_curve(frames: np.ndarray, bins: int = 20) -> np.ndarray:
    """Histogram intersection sum_b min(h_0[b], h_t[b]) for every t: [T] (1 at t = 0)."""
    h = colour_histograms(frames, bins)
    return np.minimum(h[:1], h).sum(axis=1)


def colour_curves(proto: ColourProtocol, real: RealVideos, fake: FakeVideos, seed: int,
                  fake_seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Mean curves [T] of real clips (seeded policy) and generated clips (from frame 0)."""
    offsets = np.arange(proto.num_frames)
    clips = sample_real_clips(real.lengths(), proto.num_clips, proto.num_frames, proto.real_policy, seed)
    real_sum = np.zeros(proto.num_frames)
    for (x, _) in real_clip_chunks(real, clips, offsets):
        real_sum += colour_change_curve(x[0], proto.bins)
    order = fake_order(fake, proto.num_clips, fake_seed)
    fake_sum = np.zeros(proto.num_frames)
    for (x, _) in fake_clip_chunks(fake, order, offsets):
        fake_sum += colour_change_curve(x[0], proto.bins)
    info = {"num_real": len(clips), "num_fake": len(order), "seed": seed,
            "seeds" if fake.generate else "videos": [order[0], order[-1]]}
    return real_sum / len(clips), fake_sum / len(order), info
