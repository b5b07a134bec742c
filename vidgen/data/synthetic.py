"""Procedural sample data written as real files, deterministic per seed (numpy only).

make_drive: mp4 videos of a camera driving through an endless landscape (sky, parallax
hills, a winding road, roadside objects that keep appearing, slowly changing biome): the
long-term dynamics a long-video model must learn.
make_timelapse: jpg frames of a fixed scene named ``%Y%m%d_%H%M%S.jpg`` with a known slow
trend (a growing plant), daily light cycle, yearly cycle (foliage, snow), random per-frame
weather (clouds, haze), irregular capture times with missing days; ``factors.json`` holds
the true factors of every frame.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import numpy as np
from PIL import Image

_TABLE = 4096


def _noise1d(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] at real positions x (period len(table))."""
    i = np.floor(x).astype(np.int64)
    f = x - i
    f = f * f * (3 - 2 * f)
    a, b = table[i % len(table)], table[(i + 1) % len(table)]
    return a + (b - a) * f


def _fbm(x: np.ndarray, table: np.ndarray, octaves: int = 3) -> np.ndarray:
    out, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        out = out + amp * _noise1d(x * 2 ** o + 17.3 * o, table)
        norm += amp
        amp *= 0.5
    return out / norm


def _write_mp4(path: Path, frames, fps: int, size: tuple[int, int]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        # one encoder thread and a fixed quantiser: the same frames give the same file
        stream.codec_context.thread_count = 1
        stream.options = {"qp": "16", "g": str(fps), "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)


def _drive_frames(rng: np.random.Generator, frames: int, size: tuple[int, int]):
    """Yield uint8 [H, W, 3] frames of one drive."""
    h, w = size
    tables = [rng.random(_TABLE) for _ in range(6)]
    horizon = int(0.42 * h)
    ys = np.arange(h)[:, None].astype(np.float64)
    xs = (np.arange(w)[None, :] + 0.5) / w - 0.5  # [-0.5, 0.5]
    speed = rng.uniform(0.8, 1.4)
    biome_colors = np.array([[70, 140, 60], [190, 170, 110], [225, 230, 235], [110, 120, 70]], np.float64)
    sky_top, sky_low = np.array([40, 90, 180.0]), np.array([190, 215, 240.0])
    for k in range(frames):
        z = k * speed * 0.25                                   # camera distance travelled
        biome = _fbm(np.array([z / 60.0]), tables[0], 2)[0] * (len(biome_colors) - 1)
        b0 = int(np.floor(biome))
        ground = biome_colors[b0] + (biome_colors[min(b0 + 1, 3)] - biome_colors[b0]) * (biome - b0)
        dusk = 0.75 + 0.25 * np.cos(z / 150.0)
        img = np.empty((h, w, 3))
        sky_t = np.clip(ys / max(horizon, 1), 0, 1)[..., None]
        img[:] = (sky_top + (sky_low - sky_top) * sky_t) * dusk
        steer = (_fbm(np.array([z / 25.0]), tables[1])[0] - 0.5) * 0.6
        # parallax hill layers: far ones scroll slowly (screen shift ~ 1 / depth)
        for layer, (depth, tone) in enumerate(((6.0, 0.55), (3.0, 0.75))):
            wx = xs[0] * 8 + steer * 10 / depth + z / depth
            ridge = horizon - (0.08 + 0.22 * _fbm(wx / 2, tables[2 + layer])) * h / (layer + 1)
            mask = ys >= ridge[None, :]
            img[mask & (ys < horizon + 1)] = ground * tone * dusk + (1 - tone) * 90 * dusk
        below = ys > horizon
        depth_rows = np.where(below, (h - horizon) / np.maximum(ys - horizon, 1e-3), 1e6)  # [H, 1]
        curve = (_fbm(z / 25.0 + depth_rows / 25.0, tables[1]) - 0.5) * 0.6 - steer
        cx = curve * (1 - 1 / np.maximum(depth_rows, 1))                             # road centre
        half = 0.45 / depth_rows
        ground_img = ground * (0.8 + 0.2 * _noise1d((z + depth_rows) * 3, tables[4]))[..., None]
        img = np.where(below[..., None], ground_img * dusk, img)
        road = below & (np.abs(xs - cx) < half)
        img[road] = np.array([85, 85, 90.0]) * dusk
        stripe = road & (np.abs(xs - cx) < half * 0.06) & (((z + depth_rows) % 2.0) < 1.0)
        img[stripe] = np.array([235, 225, 120.0]) * dusk
        # roadside objects at world positions 3 * i; each object's look comes from its index
        first = int(np.floor(z / 3.0)) + 1
        for i in range(first + 12, first - 1, -1):
            d = i * 3.0 - z
            if d <= 0.4:
                continue
            ro = np.random.default_rng(i * 7919 + int(tables[5][i % _TABLE] * 1e6))
            side = -1 if ro.random() < 0.5 else 1
            base_y = horizon + (h - horizon) / d
            scale = h * 0.9 / d * ro.uniform(0.6, 1.4)
            cdx = (_fbm(np.array([z / 25.0 + d / 25.0]), tables[1])[0] - 0.5) * 0.6 - steer
            ox = (cdx * (1 - 1 / max(d, 1)) + side * (0.45 / d) * ro.uniform(1.6, 3.0) + 0.5) * w
            kind = ro.integers(0, 3)
            color = ro.uniform(30, 200, 3) * dusk
            x0, x1 = int(ox - scale * 0.12), int(ox + scale * 0.12) + 1
            y0 = int(base_y - scale)
            if kind == 0:   # tree: trunk + round crown
                img[max(y0 + int(scale * 0.5), 0):int(base_y) + 1, max(x0, 0):max(x1, 0)] = [90 * dusk, 60 * dusk, 30 * dusk]
                r = scale * 0.3
                crown = (ys - (y0 + r)) ** 2 + ((xs + 0.5) * w - ox) ** 2 < r * r
                img[crown] = color * np.array([0.4, 1.0, 0.4])
            elif kind == 1:  # house: box + roof colour
                img[max(y0 + int(scale * 0.4), 0):int(base_y) + 1, max(int(ox - scale * 0.3), 0):max(int(ox + scale * 0.3), 0)] = color
                img[max(y0 + int(scale * 0.25), 0):max(y0 + int(scale * 0.4), 0), max(int(ox - scale * 0.33), 0):max(int(ox + scale * 0.33), 0)] = [150 * dusk, 40 * dusk, 30 * dusk]
            else:            # pole / sign
                img[max(y0, 0):int(base_y) + 1, max(int(ox), 0):max(int(ox) + 1 + int(scale * 0.03), 0)] = color
        yield np.clip(img, 0, 255).astype(np.uint8)


def make_drive(out_dir, seed: int = 0, frames: int = 300, size: tuple[int, int] = (72, 128),
               videos: int = 3, fps: int = 30) -> list[Path]:
    """Write ``videos`` mp4 drives ``drive_000.mp4 ...`` of ``frames`` frames each."""
    h, w = size
    assert h % 2 == 0 and w % 2 == 0, "H.264 in yuv420p needs an even frame size"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(videos):
        rng = np.random.default_rng([seed, v])
        path = out / f"drive_{v:03d}.mp4"
        _write_mp4(path, _drive_frames(rng, frames, size), fps, size)
        paths.append(path)
    return paths


def _capture_times(rng: np.random.Generator, start: datetime, days: int) -> list[datetime]:
    times = []
    for d in range(days):
        if rng.random() < 0.15:  # a missing day
            continue
        for hour in np.sort(rng.uniform(0, 24, rng.integers(1, 4))):
            times.append(start + timedelta(days=d, seconds=int(hour * 3600)))
    return times


def timelapse_frame(size, trend, day, year, cloud, haze, rng: np.random.Generator, layout) -> np.ndarray:
    """One frame: trend/day/year in [0, 1) (plant growth, hour / 24, day of year / 365.25)."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sun = np.sin(2 * np.pi * (day - 0.25))                    # > 0 between 6:00 and 18:00
    light = 0.12 + 0.88 / (1 + np.exp(-6 * sun))
    winter = max(0.0, np.cos(2 * np.pi * (year - 0.04))) ** 2  # snow peaks mid-January
    autumn = max(0.0, np.cos(2 * np.pi * (year - 0.78))) ** 4
    horizon = layout["horizon"] * h
    sky = np.array([60, 120, 210.0]) + (np.array([200, 220, 240.0]) - [60, 120, 210]) * (ys / horizon)[..., None]
    foliage = np.array([60, 150, 60.0]) * (1 - autumn) + np.array([200, 120, 40.0]) * autumn
    foliage = foliage * (1 - winter) + np.array([235, 240, 245.0]) * winter
    img = np.where((ys < horizon)[..., None], sky, foliage * (0.8 + 0.2 * (ys / h))[..., None])
    hx, hw_ = layout["house"]
    img[int(horizon - 0.18 * h):int(horizon + 0.02 * h), int(hx * w):int((hx + hw_) * w)] = [150, 110, 90]
    # the plant: stem height grows with the trend (sigmoid growth), leaves along it
    px, base = layout["plant"] * w, 0.92 * h
    top = base - (0.1 + 0.6 * trend) * h
    stem = (np.abs(xs - px) < max(1.0, 0.012 * w)) & (ys > top) & (ys < base)
    img[stem] = [40, 100, 30]
    for k in range(1, 1 + int(1 + 6 * trend)):
        ly = base - (top - base) * -k / (1 + 6 * trend)
        leaf = ((xs - px - (-1) ** k * 0.03 * w) ** 2 / (0.04 * w) ** 2 + (ys - ly) ** 2 / (0.02 * h) ** 2) < 1
        img[leaf] = [30, 170, 40]
    img = img * light
    # weather: clouds (random blobs for this frame) and haze
    for _ in range(int(cloud * 6)):
        cy, cx, r = rng.uniform(0, horizon), rng.uniform(0, w), rng.uniform(0.08, 0.2) * w
        blob = np.exp(-(((xs - cx) / r) ** 2 + ((ys - cy) / (0.5 * r)) ** 2))
        img = img + (np.array([235, 235, 240.0]) * light - img) * (0.8 * blob)[..., None]
    img = img * (1 - 0.35 * cloud)
    img = img + (np.array([170, 170, 175.0]) * light - img) * haze
    return np.clip(img, 0, 255).astype(np.uint8)


def make_timelapse(out_dir, seed: int = 0, size: tuple[int, int] = (64, 64), days: int = 400,
                   start: datetime | None = None, quality: int = 95) -> list[Path]:
    """Write time-stamped jpg frames and ``factors.json``; returns the frame paths."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2021, 1, 1, tzinfo=timezone.utc) + timedelta(days=int(rng.integers(0, 365)))
    times = _capture_times(rng, start, days)
    layout = {"horizon": rng.uniform(0.4, 0.55), "house": (rng.uniform(0.55, 0.7), 0.2),
              "plant": rng.uniform(0.2, 0.4)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    span = (times[-1] - times[0]).total_seconds()
    rows, paths = [], []
    for t in times:
        trend = (t - times[0]).total_seconds() / span
        day = (t.hour * 3600 + t.minute * 60 + t.second) / 86400
        year = ((t - datetime(t.year, 1, 1, tzinfo=timezone.utc)).total_seconds() / 86400) / 365.25
        cloud, haze = float(rng.random()), float(rng.uniform(0, 0.5) * rng.random())
        growth = 1 / (1 + np.exp(-8 * (trend - 0.5)))
        frame = timelapse_frame(size, growth, day, year, cloud, haze, rng, layout)
        path = out / t.strftime("%Y%m%d_%H%M%S.jpg")
        Image.fromarray(frame).save(path, quality=quality)
        paths.append(path)
        rows.append({"file": path.name, "time": t.isoformat(), "trend": trend, "growth": float(growth),
                     "day": day, "year": year, "cloud": cloud, "haze": haze})
    factors = {"seed": seed, "size": list(size), "start": times[0].isoformat(), "end": times[-1].isoformat(),
               "missing_days": days - len({t.date() for t in times}), "frames": rows}
    tmp = out / ".factors.json.tmp"
    tmp.write_text(json.dumps(factors, indent=1))
    os.replace(tmp, out / "factors.json")
    return paths


# --- captioned shapes (text-to-image) -------------------------------------------------------
SHAPE_COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 225), "yellow": (235, 205, 40)}
SHAPE_KINDS = ("circle", "square", "triangle")


def shape_caption(objects: list[tuple[str, str]], background: str) -> str:
    """[("red", "circle"), ...], "blue" -> "a red circle (and a ...) on a blue background"."""
    return " and ".join(f"a {c} {k}" for c, k in objects) + f" on a {background} background"


def _shape_mask(kind: str, size: int, box: tuple[float, float, float], ss: int = 4) -> np.ndarray:
    """Anti-aliased coverage [size, size] in [0, 1] of a shape with centre (cx, cy) and
    half-extent r (pixels), from ``ss`` x ``ss`` samples per pixel."""
    cx, cy, r = box
    t = (np.arange(size * ss) + 0.5) / ss
    ys, xs = np.meshgrid(t, t, indexing="ij")
    dx, dy = xs - cx, ys - cy
    if kind == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif kind == "square":
        inside = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    else:  # triangle pointing up, inscribed in the circle of radius r
        inside = (dy <= r * 0.5) & (dy >= -r + 1.732 * np.abs(dx))
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def shapes_image(rng: np.random.Generator, size: int, objects: list[tuple[str, str]],
                 background: str) -> tuple[np.ndarray, list[dict]]:
    """One image uint8 [size, size, 3] and the placed objects (colour, shape, centre, radius)."""
    img = np.empty((size, size, 3))
    img[:] = np.asarray(SHAPE_COLORS[background], np.float64) + rng.normal(0, 6, 3)
    placed = []
    n = len(objects)
    for k, (color, kind) in enumerate(objects):
        r = size * rng.uniform(0.26, 0.40) * (1.0 if n == 1 else 0.8)
        if n > 1:
            r = min(r, (size / n - 1) / 2)  # fits in its part of the image
        if n == 1:
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        else:  # side by side: object k in its own half (left / right, in caption order)
            half = size / n
            cx = rng.uniform(half * k + r + 0.5, half * (k + 1) - r - 0.5)
            cy = rng.uniform(r + 1, size - r - 1)
        m = _shape_mask(kind, size, (cx, cy, r))[..., None]
        col = np.asarray(SHAPE_COLORS[color], np.float64) + rng.normal(0, 8, 3)
        img = img * (1 - m) + col * m
        placed.append({"color": color, "shape": kind, "cx": float(cx), "cy": float(cy), "r": float(r)})
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), placed


def make_shapes(out_dir, seed: int = 0, size: int = 32, count: int = 2000, objects: tuple[int, ...] = (1,)) -> list[Path]:
    """Write ``count`` PNG images of coloured shapes on coloured backgrounds, each with a
    caption ``NAME.txt`` ("a red circle on a blue background"; with two objects "a red circle
    and a blue square on a green background", the first in the left half), plus
    ``labels.jsonl`` (file, caption, background, objects with centre and radius in pixels).
    ``objects``: the numbers of shapes per image to draw from (e.g. (1, 2)). Colours of the
    shapes and the background differ."""
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = list(SHAPE_COLORS)
    rows, paths = [], []
    for i in range(count):
        n = int(rng.choice(objects))
        background = colors[rng.integers(len(colors))]
        free = [c for c in colors if c != background]
        picked = rng.choice(len(free), size=n, replace=False)
        objs = [(free[j], SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]) for j in picked]
        img, placed = shapes_image(rng, size, objs, background)
        caption = shape_caption(objs, background)
        path = out / f"shape_{i:05d}.png"
        Image.fromarray(img).save(path)
        (out / f"shape_{i:05d}.txt").write_text(caption + "\n")
        paths.append(path)
        rows.append(json.dumps({"file": path.name, "text": caption, "background": background, "objects": placed}))
    tmp = out / ".labels.jsonl.tmp"
    tmp.write_text("\n".join(rows) + "\n")
    os.replace(tmp, out / "labels.jsonl")
    return paths
