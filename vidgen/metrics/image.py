"""Frame protocols: FID, FD_DINOv2, KID, precision/recall over video frames (METHODS.md 9).

Real side ("full"): every frame of every real video, each weighted 1 / len(video), so that
every video counts once whatever its length. Generated side: `num_fake` frames taken from
generated clips of `fake_clip_frames` frames that start at frame 0.

Names: `fid50k_full` (or `fid{N}[k]_full`), `fd_dinov2` (= 50k, or `fd_dinov2_{N}[k]`),
`kid` / `kid{N}[k]` and `pr` / `pr{N}[k]` (Inception features, the same frames as FID).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from vidgen.errors import VidgenError
from vidgen.metrics.detectors import Detector
from vidgen.metrics.extract import extract
from vidgen.metrics.frechet import FeatureStats
from vidgen.metrics.inputs import FakeVideos, RealVideos
from vidgen.metrics.video import fake_order

_COUNT = r"(\d+)(k?)"
_PATTERNS = {
    "fid": re.compile(rf"^fid{_COUNT}_full$"),
    "fd_dinov2": re.compile(rf"^fd_dinov2(?:_{_COUNT})?$"),
    "kid": re.compile(rf"^kid(?:{_COUNT})?$"),
    "pr": re.compile(rf"^pr(?:{_COUNT})?$"),
}
DETECTOR_OF = {"fid": "inception", "fd_dinov2": "dinov2", "kid": "inception", "pr": "inception"}


@dataclass(frozen=True)
class FrameProtocol:
    name: str
    kind: str                   # fid | fd_dinov2 | kid | pr
    detector: str
    num_fake: int               # generated frames
    fake_clip_frames: int = 16  # frames per generated clip, from frame 0
    real_weighting: str = "1/len(video)"
    max_real_samples: int = 50_000  # reservoir of real features for kid / pr (weighted sample)
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    pr_k: int = 3

    @property
    def reservoir(self) -> int:
        return self.max_real_samples if self.kind in ("kid", "pr") else 0

    def pass_key(self) -> tuple:
        """Protocols with the same key share one feature pass."""
        return ("frames", self.detector, self.num_fake, self.fake_clip_frames)

    def describe(self) -> dict:
        return asdict(self)


def frame_protocol(name: str) -> FrameProtocol | None:
    for kind, pattern in _PATTERNS.items():
        m = pattern.match(name)
        if m:
            n = 50_000 if not m[1] else int(m[1]) * (1000 if m[2] else 1)
            if n < 2:
                raise VidgenError(f"metric {name}: needs at least 2 generated frames")
            return FrameProtocol(name, kind, DETECTOR_OF[kind], n)
    return None


def real_frame_chunks(real: RealVideos, chunk: int = 64):
    """Every frame of every video, weight 1 / len(video)."""
    for video in real.videos:
        n = len(video)
        for i in range(0, n, chunk):
            idx = np.arange(i, min(i + chunk, n))
            yield video.get(idx), np.full(len(idx), 1.0 / n)


def fake_frame_chunks(fake: FakeVideos, order: list[int], clip_frames: int, num_frames: int):
    left = num_frames
    for k in order:
        take = min(clip_frames, left)
        yield fake.clip(k, k, np.arange(take)), np.ones(take)
        left -= take


def real_frame_stats(detector: Detector, real: RealVideos, reservoir: int, seed: int,
                     batch_size: int, progress: bool = True) -> FeatureStats:
    stats = FeatureStats(detector.feature_dim, reservoir, seed, detector.device)
    total = sum(real.lengths())
    extract(detector, real_frame_chunks(real), stats, batch_size, total, "real frames", progress)
    stats.meta = {"count": total, "videos": len(real.videos), "weighting": "1/len(video)"}
    return stats


def fake_frame_stats(detector: Detector, fake: FakeVideos, num_fake: int, clip_frames: int,
                     reservoir: int, seed: int, batch_size: int, progress: bool = True) -> FeatureStats:
    clips = -(-num_fake // clip_frames)
    order = fake_order(fake, clips, seed)
    stats = FeatureStats(detector.feature_dim, reservoir, seed, detector.device)
    extract(detector, fake_frame_chunks(fake, order, clip_frames, num_fake), stats, batch_size,
            num_fake, "generated frames", progress)
    stats.meta = {"count": num_fake, "clips": clips, "frames_per_clip": clip_frames,
                  "seeds" if fake.generate else "videos": [order[0], order[-1]]}
    return stats
