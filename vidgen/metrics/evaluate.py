"""One evaluation: named metrics x K runs -> a report dict (every number says how it was made).

Real statistics are cached under the hash of (dataset manifest, resolution read, protocol,
detector SHA-256, sampling seed); the seed is part of the key, so each run samples fresh real clip offsets
instead of freezing one draw.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

import vidgen
from vidgen.errors import ConfigError, VidgenError
from vidgen.metrics import image, video
from vidgen.metrics.class_match import class_matched_fid
from vidgen.metrics.detectors import Detector, cache_dir, load_detector, resolve_weights
from vidgen.metrics.frechet import (FeatureStats, frechet_from_stats, kernel_inception_distance,
                                    precision_recall)
from vidgen.metrics.inputs import FakeVideos, RealVideos
from vidgen.metrics.sensitivity import fid_heatmaps
from vidgen.optional import available

FAKE_SEED_STRIDE = 1_000_000  # run r uses generator seeds seed + r * stride + i


@dataclass
class EvalOptions:
    metrics: list[str]
    runs: int = 1
    seed: int = 0
    real_policy: str = "per_video"
    clip_batch: int = 8          # clips per detector call
    frame_batch: int = 64        # frames per detector call
    use_cache: bool = True
    stats_dir: Path | None = None  # default $VIDGEN_CACHE/stats
    device: str = "cpu"
    detectors: dict[str, Detector] = field(default_factory=dict)   # pre-built (tests, Python)
    detector_paths: dict[str, str] = field(default_factory=dict)   # NAME -> weight file
    detector_dir: str | None = None
    progress: bool = True
    # Covariance of the Frechet distances: "ml" (1 / n: the StyleGAN2-ADA, StyleGAN3,
    # StyleGAN-V and long-video-GAN metric code) or "unbiased" (1 / (n - 1): TTUR, pytorch-fid,
    # torch-fidelity, EDM, EDM2). The difference is a factor 1 + 1 / n on the covariances.
    covariance: Literal["ml", "unbiased"] = "ml"
    fid_heatmaps: int = 0        # heatmaps of the N generated images that move FID most (run 0)
    companions: bool = True      # FD-DINOv2 / CLIP-FD beside every FID when their detectors are present


STATS_FORMAT = 2  # part of every cache key: statistics written by older code are not reused


def parse_metrics(names: list[str], real_policy: str = "per_video") -> list:
    protos = []
    for name in names:
        proto = (video.fvd_protocol(name, real_policy) or image.frame_protocol(name)
                 or video.colour_protocol(name, real_policy))
        if proto is None:
            raise VidgenError(
                f"unknown metric {name!r}; known: fvd2048_16f, fvd2048_128f, fvd2048_128f_subsample8f "
                "(fvd{N}_{L}f[_subsample{K}f]), fid50k_full (fid{N}[k]_full), fd_dinov2[_{N}[k]], "
                "clip_fd[_{N}[k]], kid[{N}[k]], pr[{N}[k]], fid_class_matched[_{N}[k]], "
                "colour_change[{N}_{T}f]")
        protos.append(proto)
    return protos


def benchmark_metrics(bench) -> list[str]:
    """The default protocols of a benchmark definition (`vidgen.data.benchmarks.Benchmark`),
    checked as metric names; a bad one is a ConfigError naming the definition file."""
    try:
        parse_metrics(list(bench.protocols), bench.real_policy)
    except VidgenError as exc:
        raise ConfigError(f"{bench.path}: key 'protocols': {exc}") from None
    return list(bench.protocols)


class _Evaluator:
    def __init__(self, real: RealVideos, fake: FakeVideos, opts: EvalOptions):
        self.real, self.fake, self.opts = real, fake, opts
        self.detectors = dict(opts.detectors)
        self.stats_dir = Path(opts.stats_dir) if opts.stats_dir else cache_dir() / "stats"

    def unavailable(self, name: str) -> str | None:
        """Why detector `name` cannot be loaded (None if it can), without loading it."""
        if name in self.detectors:
            return None
        if name == "clip" and not available("open_clip"):
            return "open_clip is not installed (pip install 'vidgen[text]')"
        try:
            resolve_weights(name, self.opts.detector_paths.get(name), self.opts.detector_dir)
        except VidgenError as exc:
            return str(exc)
        return None

    def detector(self, name: str) -> Detector:
        if name not in self.detectors:
            self.detectors[name] = load_detector(name, self.opts.detector_paths.get(name),
                                                 self.opts.detector_dir, self.opts.device)
        return self.detectors[name]

    def real_stats(self, key: dict, compute: Callable[[], FeatureStats]) -> tuple[FeatureStats, bool]:
        """Load real statistics from the cache, or compute (and store) them."""
        key = {"manifest": self.real.manifest_sha256, "resolution": self.real.resolution,
               "format": STATS_FORMAT, **key}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        path = self.stats_dir / f"{digest[:32]}.safetensors"
        if self.opts.use_cache and path.is_file():
            return FeatureStats.load(path), True
        stats = compute()
        if self.opts.use_cache:
            stats.meta = {**stats.meta, "cache_key": key}
            stats.save(path)
        return stats, False


def _entry(name: str, proto, det: Detector | None, policy: str | None, covariance: str | None = None) -> dict:
    described = proto.describe() if hasattr(proto, "describe") else dict(vars(proto))
    if covariance is not None:
        described["covariance"] = covariance
    return {"name": name, "values": [], "protocol": described, "num_real": [], "num_fake": [], "real_sampling": policy,
            "seeds": {"real": [], "fake": []}, "real_stats_cached": [],
            "detector": None if det is None else {"name": det.name, "sha256": det.sha256}}


def _log(entry: dict, value: float, real_meta: dict, fake_meta: dict, seed: int, cached: bool):
    entry["values"].append(float(value))
    entry["num_real"].append(real_meta.get("count"))
    entry["num_fake"].append(fake_meta.get("count"))
    entry["seeds"]["real"].append(seed)
    entry["seeds"]["fake"].append(fake_meta.get("seeds", fake_meta.get("videos", fake_meta.get("images"))))
    entry["real_stats_cached"].append(cached)


COMPANIONS = (("fd_dinov2", "dinov2", "FD-DINOv2"), ("clip_fd", "clip", "CLIP-FD"))


def _count_name(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def add_companions(protos: list, ev: "_Evaluator") -> tuple[list, dict[str, str], list[str]]:
    """FD-DINOv2 and CLIP-FD on the frames of every FID protocol (a second feature space not
    trained on ImageNet classes, docs/METHODS.md 9), when their detectors are available and the
    user did not name them: (protocols, companion name -> its FID, notes on skipped ones)."""
    fid_counts = sorted({p.num_fake for p in protos if isinstance(p, image.FrameProtocol) and p.kind == "fid"})
    out, of, notes = list(protos), {}, []
    for n in fid_counts:
        fid_name = next(p.name for p in protos if isinstance(p, image.FrameProtocol) and p.kind == "fid"
                        and p.num_fake == n)
        for kind, det_name, label in COMPANIONS:
            if any(isinstance(p, image.FrameProtocol) and p.kind == kind for p in protos):
                continue  # asked for by name: a missing detector is then an error
            name = f"{kind}_{_count_name(n)}"
            reason = ev.unavailable(det_name)
            if reason:
                notes.append(f"{label} ({name}, beside {fid_name}) skipped: {reason}")
                continue
            out.append(image.frame_protocol(name))
            of[name] = fid_name
    return out, of, notes


def _check_content(protos: list, fake: FakeVideos) -> None:
    if fake.content != "image":
        return
    clip_metrics = [p.name for p in protos if not isinstance(p, image.FrameProtocol)]
    if clip_metrics:
        raise VidgenError(f"{', '.join(clip_metrics)}: clip metrics need videos, but {fake.path or 'the generator'} "
                          f"gives images ({fake.info.get('family', 'an image folder')}); use frame metrics "
                          "(fid50k_full, fd_dinov2, kid, pr, ...)")


def evaluate(real: RealVideos, fake: FakeVideos, opts: EvalOptions) -> dict:
    """Run every metric of `opts.metrics` `opts.runs` times; returns the report dict (PNG
    pictures, e.g. the FID heatmaps, under the key "_images": name -> uint8 [H, W, 3])."""
    if opts.runs < 1:
        raise VidgenError(f"--runs must be >= 1, got {opts.runs}")
    if opts.covariance not in ("ml", "unbiased"):
        raise VidgenError(f"covariance {opts.covariance!r}: use 'ml' or 'unbiased'")
    unbiased = opts.covariance == "unbiased"
    protos = parse_metrics(opts.metrics, opts.real_policy)
    _check_content(protos, fake)
    ev = _Evaluator(real, fake, opts)
    companion_of, notes = {}, []
    if opts.companions:
        protos, companion_of, notes = add_companions(protos, ev)
    heat_proto = None
    if opts.fid_heatmaps > 0:
        heat_proto = next((p for p in protos if isinstance(p, image.FrameProtocol) and p.kind == "fid"), None)
        if heat_proto is None:
            raise VidgenError("--fid-heatmaps needs an FID metric in --metrics (e.g. fid50k_full)")
    entries: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    extra: dict = {}
    for run in range(opts.runs):
        seed = opts.seed + run
        fake_seed = opts.seed + run * FAKE_SEED_STRIDE
        frame_passes: dict[tuple, tuple] = {}
        for proto in protos:
            if isinstance(proto, video.ClipProtocol):
                det = ev.detector(proto.detector)
                r, cached = ev.real_stats(
                    {"protocol": proto.describe(), "detector": det.sha256, "seed": seed},
                    lambda: video.real_clip_stats(proto, real, det, seed, opts.clip_batch, 0, opts.progress))
                f = video.fake_clip_stats(proto, fake, det, fake_seed, opts.clip_batch, 0, opts.progress)
                e = entries.setdefault(proto.name, _entry(proto.name, proto, det, proto.real_policy, opts.covariance))
                _log(e, frechet_from_stats(r, f, unbiased=unbiased), r.meta, f.meta, seed, cached)
            elif isinstance(proto, image.FrameProtocol):
                det = ev.detector(proto.detector)
                key = proto.pass_key()
                if key not in frame_passes:  # one pass serves fid / kid / pr / class matching on the same frames
                    same = [p for p in protos if isinstance(p, image.FrameProtocol) and p.pass_key() == key]
                    reservoir = max((p.reservoir for p in same), default=0)
                    keep = [] if any(p.keeps_features for p in same) or (
                        run == 0 and heat_proto is not None and heat_proto.pass_key() == key) else None
                    r, cached = ev.real_stats(
                        {"pass": list(key), "weighting": "1/len(video)", "detector": det.sha256,
                         "reservoir": reservoir, "seed": seed},
                        lambda: image.real_frame_stats(det, real, reservoir, seed, opts.frame_batch,
                                                       opts.progress))
                    f = image.fake_frame_stats(det, fake, proto.num_fake, proto.fake_clip_frames,
                                               reservoir, fake_seed, opts.frame_batch, opts.progress, keep=keep)
                    feats = torch.cat(keep) if keep else None
                    frame_passes[key] = (r, f, cached, feats)
                r, f, cached, feats = frame_passes[key]
                if proto.kind in image.FRECHET_KINDS:
                    e = entries.setdefault(proto.name, _entry(proto.name, proto, det, "all frames", opts.covariance))
                    if proto.name in companion_of:
                        e["companion_of"] = companion_of[proto.name]
                    _log(e, frechet_from_stats(r, f, unbiased=unbiased), r.meta, f.meta, seed, cached)
                    if proto is heat_proto and run == 0:
                        if not det.has_spatial:
                            raise VidgenError(f"--fid-heatmaps needs a detector with spatial activations; "
                                              f"{det.name} has none")
                        info, picture = fid_heatmaps(det, r, f, feats, f.meta["frames"], opts.fid_heatmaps, unbiased)
                        extra["fid_heatmaps"] = {"metric": proto.name, "png": "fid_heatmaps.png", **info}
                        extra.setdefault("_images", {})["fid_heatmaps.png"] = picture
                elif proto.kind == "fid_class_matched":
                    if not det.num_classes:
                        raise VidgenError(f"{proto.name}: detector {det.name} is not a classifier")
                    classes = det.classify(feats).argmax(dim=1).cpu().numpy()
                    value, match = class_matched_fid(r, feats, classes, seed, unbiased)
                    before = frechet_from_stats(r, f, unbiased=unbiased)
                    e = entries.setdefault(proto.name, _entry(proto.name, proto, det, "all frames", opts.covariance))
                    _log(e, value, r.meta, f.meta, seed, cached)
                    drop = (before - value) / before if before > 0 else 0.0
                    for k, v in (("fid_before", before), ("drop", drop), ("matched_mass", match.matched_mass),
                                 ("real_classes", match.real_classes), ("fake_classes", match.fake_classes),
                                 ("max_repeat", match.max_repeat)):
                        e.setdefault(k, []).append(v)
                elif proto.kind == "kid":
                    k = kernel_inception_distance(r.features(), f.features(), proto.kid_subsets,
                                                  proto.kid_subset_size, seed)
                    e = entries.setdefault(proto.name, _entry(proto.name, proto, det, "all frames"))
                    _log(e, k.value, r.meta, f.meta, seed, cached)
                    e.setdefault("subset_std", []).append(k.std)
                else:
                    pr = precision_recall(r.features(), f.features(), proto.pr_k)
                    for part in ("precision", "recall"):
                        name = f"{proto.name}_{part}"
                        e = entries.setdefault(name, _entry(name, proto, det, "all frames"))
                        _log(e, getattr(pr, part), r.meta, f.meta, seed, cached)
            else:
                real_c, fake_c, info = video.colour_curves(proto, real, fake, seed, fake_seed)
                e = entries.setdefault(proto.name, _entry(proto.name, proto, None, proto.real_policy))
                _log(e, float(np.abs(real_c - fake_c).mean()), {"count": info["num_real"]},
                     {"count": info["num_fake"], "seeds": info.get("seeds", info.get("videos"))},
                     seed, False)
                c = curves.setdefault(proto.name, {"real": [], "fake": []})
                c["real"].append(real_c.tolist())
                c["fake"].append(fake_c.tolist())
    for e in entries.values():
        vals = np.asarray(e["values"])
        e["value"] = float(vals.mean())
        e["std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        e["runs"] = len(vals)
        if "drop" in e:  # fid_class_matched: the flag of the ImageNet-classes study
            e["flag_threshold"] = e["protocol"]["class_match_flag"]
            e["flagged"] = bool(np.mean(e["drop"]) >= e["flag_threshold"])
            e["verdict"] = ("FID driven by ImageNet-class statistics" if e["flagged"] else
                            "no large drop after matching ImageNet top-1 class histograms")
    for name, c in curves.items():
        entries[name]["curves"] = {k: np.mean(v, axis=0).tolist() for k, v in c.items()}
    return {
        "vidgen_version": vidgen.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "real": {"path": real.path, "manifest_sha256": real.manifest_sha256, "videos": len(real.videos),
                 "resolution": real.resolution, "prepared": real.prepared},
        "fake": {"kind": fake.kind, "path": fake.path, "checkpoint_step": fake.checkpoint_step,
                 "content": fake.content, **({"sampler": fake.info} if fake.info else {})},
        "runs": opts.runs, "seed": opts.seed, "real_policy": opts.real_policy, "covariance": opts.covariance,
        "detectors": {n: {"name": d.name, "sha256": d.sha256} for n, d in ev.detectors.items()},
        "metrics": entries,
        "notes": notes,
        **extra,
    }
