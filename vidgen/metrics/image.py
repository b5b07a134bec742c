"""Frame protocols: FID, FD_DINOv2, CLIP-FD, KID, precision/recall, class-matched FID over
video frames or images (docs/METHODS.md 9).

Real side ("full"): every frame of every real video, each weighted 1 / len(video), so that
every video counts once whatever its length. Generated side: `num_fake` frames taken from
generated clips of `fake_clip_frames` frames that start at frame 0 (video content), or the
images of `num_fake` consecutive seeds (image families) or images of a folder.

Names: `fid50k_full` (or `fid{N}[k]_full`), `fd_dinov2` (= 50k, or `fd_dinov2_{N}[k]`),
`clip_fd[_{N}[k]]`, `kid` / `kid{N}[k]` and `pr` / `pr{N}[k]` (Inception features, the same
frames as FID), `fid_class_matched[_{N}[k]]` (class_match.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

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
    "clip_fd": re.compile(rf"^clip_fd(?:_{_COUNT})?$"),
    "kid": re.compile(rf"^kid(?:{_COUNT})?$"),
    "pr": re.compile(rf"^pr(?:{_COUNT})?$"),
    "fid_class_matched": re.compile(rf"^fid_class_matched(?:_{_COUNT})?$"),
}
DETECTOR_OF = {"fid": "inception", "fd_dinov2": "dinov2", "clip_fd": "clip", "kid": "inception",
               "pr": "inception", "fid_class_matched": "inception"}
FRECHET_KINDS = ("fid", "fd_dinov2", "clip_fd")


@dataclass(frozen=True)
class FrameProtocol:
    name: str
    kind: str                   # fid | fd_dinov2 | clip_fd | kid | pr | fid_class_matched
    detector: str
    num_fake: int               # generated frames
    fake_clip_frames: int = 16  # frames per generated clip, from frame 0
    real_weighting: str = "1/len(video)"
    max_real_samples: int = 50_000  # reservoir of real features for kid / pr (weighted sample)
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    pr_k: int = 3
    class_match_flag: float = 0.10  # fid_class_matched: flag a relative FID drop at least this large

    @property
    def reservoir(self) -> int:
        return self.max_real_samples if self.kind in ("kid", "pr") else 0

    @property
    def keeps_features(self) -> bool:
        """Needs every generated feature row (not only the sums)."""
        return self.kind == "fid_class_matched"

    def pass_key(self) -> tuple:
        """Protocols with the same key share one feature pass."""
        return ("frames", self.detector, self.num_fake, self.fake_clip_frames)

    def describe(self) -> dict:
        d = asdict(self)
        if self.kind != "fid_class_matched":
            d.pop("class_match_flag")
        return d


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


@dataclass
class FakeFrames:
    """Which generated frames a frame protocol uses: `rows[i]` = (video index or seed, frame)
    of feature row i (image content: (seed or image index, 0))."""

    fake: FakeVideos
    rows: list[tuple[int, int]]
    meta: dict = field(default_factory=dict)

    def chunks(self, chunk: int = 64):
        """(uint8 [n, H, W, 3], weights [n]) in row order."""
        f = self.fake
        if f.content == "image":
            for a in range(0, len(self.rows), chunk):
                ids = [r[0] for r in self.rows[a:a + chunk]]
                if f.generate is not None:  # consecutive seeds
                    yield f.images_at(ids[0], len(ids)), np.ones(len(ids))
                else:
                    yield f.images.get(np.asarray(ids)), np.ones(len(ids))
            return
        a = 0
        while a < len(self.rows):  # one generated clip (frames 0..take-1) at a time
            k = self.rows[a][0]
            take = 1
            while a + take < len(self.rows) and self.rows[a + take][0] == k:
                take += 1
            yield f.clip(k, k, np.arange(take)), np.ones(take)
            a += take

    def frame(self, i: int) -> np.ndarray:
        """The pixels of feature row i: uint8 [H, W, 3]."""
        src, t = self.rows[i]
        f = self.fake
        if f.content == "image":
            return f.images_at(src, 1)[0] if f.generate is not None else f.images.get(np.array([src]))[0]
        return f.clip(src, src, np.array([t]))[0]

    def describe_row(self, i: int) -> dict:
        src, t = self.rows[i]
        if self.fake.content == "image":
            return {"seed": src} if self.fake.generate is not None else {"image": src}
        return {"seed" if self.fake.generate is not None else "video": src, "frame": t}


def fake_frames(fake: FakeVideos, num_fake: int, clip_frames: int, seed: int) -> FakeFrames:
    """Video content: clips of `clip_frames` frames from frame 0 (seeds seed, seed+1, ... or a
    seeded choice of videos); image content: seeds seed..seed+num_fake-1 or a seeded choice
    of images."""
    if fake.content == "image":
        if fake.generate is not None:
            ids = list(range(seed, seed + num_fake))
            return FakeFrames(fake, [(s, 0) for s in ids], {"count": num_fake, "seeds": [ids[0], ids[-1]]})
        if len(fake.images) < num_fake:
            raise VidgenError(f"{fake.path}: {len(fake.images)} generated images, the protocol needs {num_fake}")
        ids = sorted(np.random.default_rng(seed).permutation(len(fake.images))[:num_fake].tolist())
        return FakeFrames(fake, [(i, 0) for i in ids], {"count": num_fake, "images": [ids[0], ids[-1]]})
    clips = -(-num_fake // clip_frames)
    order = fake_order(fake, clips, seed)
    rows, left = [], num_fake
    for k in order:
        take = min(clip_frames, left)
        rows += [(k, t) for t in range(take)]
        left -= take
    return FakeFrames(fake, rows, {"count": num_fake, "clips": clips, "frames_per_clip": clip_frames,
                                   "seeds" if fake.generate else "videos": [order[0], order[-1]]})


def real_frame_stats(detector: Detector, real: RealVideos, reservoir: int, seed: int,
                     batch_size: int, progress: bool = True) -> FeatureStats:
    """Weighted statistics of every real frame; for a classifier detector also the weighted
    histogram of the frames' top-1 classes (meta["class_hist"], for fid_class_matched)."""
    stats = FeatureStats(detector.feature_dim, reservoir, seed, detector.device)
    total = sum(real.lengths())
    hist = np.zeros(detector.num_classes) if detector.num_classes else None

    def count_classes(feats, weights):
        top1 = detector.classify(feats).argmax(dim=1).cpu().numpy()
        np.add.at(hist, top1, weights.cpu().numpy())

    extract(detector, real_frame_chunks(real), stats, batch_size, total, "real frames", progress,
            on_batch=count_classes if hist is not None else None)
    stats.meta = {"count": total, "videos": len(real.videos), "weighting": "1/len(video)"}
    if hist is not None:
        stats.meta["class_hist"] = hist.tolist()
    return stats


def fake_frame_stats(detector: Detector, fake: FakeVideos, num_fake: int, clip_frames: int,
                     reservoir: int, seed: int, batch_size: int, progress: bool = True,
                     keep: list | None = None) -> FeatureStats:
    """Statistics of the generated frames of `fake_frames`; with `keep` (a list) every feature
    row is appended to it (float32 [b, D] per batch) and stats.meta["frames"] is the
    `FakeFrames` that says where each row came from."""
    plan = fake_frames(fake, num_fake, clip_frames, seed)
    stats = FeatureStats(detector.feature_dim, reservoir, seed, detector.device)
    on_batch = (lambda feats, w: keep.append(feats.cpu())) if keep is not None else None
    extract(detector, plan.chunks(), stats, batch_size, num_fake, "generated frames", progress, on_batch=on_batch)
    stats.meta = dict(plan.meta)
    if keep is not None:
        stats.meta["frames"] = plan
    return stats
