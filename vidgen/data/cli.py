"""`vidgen data prepare|inspect|synth`: build, look at and generate datasets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vidgen.errors import DataError

PREPARE_EPILOG = """examples:
  vidgen data prepare videos/ --out data/mtb --resolution 36x64 --resolution 144x256 --fps 30
  vidgen data prepare clip.mp4 frames/ --out data/small --trim 1:-1 --min-frames 128 --workers 2
  vidgen data prepare webcam/ --out data/cam --time-pattern '%Y_%m%d_%H%M0' --resolution 64x64
  vidgen data prepare --benchmark mtb --from downloads/mtb --out data/mtb
  vidgen data prepare --benchmark my_defs/cams.yaml --from downloads/cams --out data/cams
  vidgen data prepare timelapse.mp4 --out data/tl --start 2023-06-13T03:11:46 --interval 60s --resolution 64x64
  vidgen data prepare webcam/ --out data/cam --align --resolution 128x128   # register shaky frames
  vidgen data prepare images/ --out data/img256 --resolution 256x256 --quality 100 --latents stabilityai/sd-vae-ft-mse
A time-lapse delivered as one video: frame i was captured at --start + i * --interval
(without --start, the video's creation time). --align registers every frame of a clip to a
reference frame (translation, sub-pixel), records each shift in manifest.json and crops
every frame to the area all of them cover.
--out is never one of the inputs or inside them; --overwrite replaces only a dataset made by
this command. Two runs cannot write one --out at a time (a lock file .NAME.lock beside it).
Symlinks that lead outside an input folder are skipped with a line (--follow-symlinks reads
them). Frames over 150 megapixels (VIDGEN_MAX_PIXELS) are refused from their headers.
With --latents every prepared resolution is also encoded once with that VAE (a folder with
config.json and diffusion_pytorch_model.safetensors, or a name under $VIDGEN_CACHE/vae/) into
DIR/latents-HxW/ for `vidgen diffusion train` with data.latents: true (docs/DIFFUSION.md).
With --benchmark the clip count, fps and resolutions are checked against the definition
(recorded in manifest.json); a mismatch exits non-zero (with --strict nothing is written).
Bad inputs are skipped with one line each and listed in DIR/report.json; the exit status is
non-zero only when nothing was usable, or with --strict when anything was skipped."""

INSPECT_EPILOG = """examples:
  vidgen data inspect data/mtb                  # summary + ./mtb_contact_sheet.png
  vidgen data inspect clip.mp4 --out sheet.png  # a raw video or frame folder works too
The contact sheet goes to the current folder unless --out says where (never into the
inspected folder, which may be read-only)."""

SYNTH_EPILOG = """examples:
  vidgen data synth drive out/drive --seed 0 --frames 600 --size 72x128 --videos 4
  vidgen data synth timelapse out/tl --seed 0 --size 64x64 --days 400
  vidgen data synth shapes out/shapes --size 32x32 --count 4000          # captioned, for text-to-image
  vidgen data synth shapes out/shapes2 --count 4000 --objects 1,2        # one or two shapes per image"""


def _positive(text: str) -> int:
    try:
        value = int(text)
        assert value > 0
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    return value


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="prepare, inspect and synthesise datasets",
                                 description="Dataset tools: prepare, inspect, synth.",
                                 epilog="examples:\n  vidgen data synth drive out/drive\n"
                                        "  vidgen data prepare out/drive --out data/drive --resolution 36x64\n"
                                        "  vidgen data inspect data/drive",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: data.print_help() or 2)

    p = sub.add_parser("prepare", help="videos / frame folders -> dataset folder",
                       epilog=PREPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="video files, zips of frames, frame folders, or folders of those")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--resolution", action="append", metavar="HxW",
                   help="output resolution (repeatable; default 36x64)")
    p.add_argument("--fps", type=float, help="resample videos to this frame rate")
    p.add_argument("--trim", metavar="START:END", help="keep seconds START..END of each video (END<0: from the end)")
    p.add_argument("--min-frames", type=int, default=1, help="skip clips with fewer frames")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--strict", action="store_true", help="fail (write nothing) if anything is skipped")
    p.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto", help="video decoder")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the shards")
    p.add_argument("--time-pattern", help="strftime pattern of capture times in frame names")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--benchmark", metavar="NAME",
                   help="check the result against a benchmark definition: datasets/NAME.yaml or a "
                        "path to a YAML file (its resolutions and fps are the defaults)")
    p.add_argument("--from", dest="from_dir", metavar="DIR", help="raw sources of --benchmark")
    p.add_argument("--start", metavar="TIME", help="time-lapse video: capture time of its first frame "
                   "(ISO 8601, UTC unless an offset is given; default: the video's creation time)")
    p.add_argument("--interval", metavar="DT", help="time-lapse video: time between frames, e.g. 60s, 15m, 1h")
    p.add_argument("--align", action="store_true",
                   help="register every frame to a reference frame and crop to the common area")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="read symlinks that lead outside the input folders (default: skip them with a line)")
    p.add_argument("--latents", metavar="VAE", help="also encode every resolution with this VAE (diffusion latents)")
    p.add_argument("--vae-sha256", default="", metavar="HEX", help="refuse a --latents VAE whose weights differ")
    p.add_argument("--device", default="cpu", help="device of the --latents VAE")
    p.set_defaults(func=cmd_prepare)

    q = sub.add_parser("inspect", help="summary and contact sheet of a dataset or source",
                       epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("path", help="dataset folder (with manifest.json), video, zip or frame folder")
    q.add_argument("--out", "--png", dest="png", metavar="FILE.png",
                   help="contact sheet path (default: NAME_contact_sheet.png in the current folder)")
    q.add_argument("--clips", type=_positive, default=8, help="clips (rows) in the contact sheet")
    q.add_argument("--frames", type=_positive, default=8, help="frames per clip in the contact sheet")
    q.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto")
    q.set_defaults(func=cmd_inspect)

    s = sub.add_parser("synth", help="write the procedural sample data (mp4 / jpg)",
                       epilog=SYNTH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("kind", choices=("drive", "timelapse", "shapes"))
    s.add_argument("out", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", default=None, help="HxW (default 72x128; shapes: 32x32)")
    s.add_argument("--frames", type=_positive, default=300, help="frames per video (drive)")
    s.add_argument("--videos", type=_positive, default=3, help="number of videos (drive)")
    s.add_argument("--days", type=_positive, default=400, help="span in days (timelapse)")
    s.add_argument("--count", type=_positive, default=4000, help="number of images (shapes)")
    s.add_argument("--objects", default="1", help="shapes per image to draw from, e.g. 1 or 1,2 (shapes)")
    s.set_defaults(func=cmd_synth)


def cmd_prepare(args) -> int:
    from vidgen.data.prepare import PrepareConfig, parse_resolution, parse_trim, prepare

    bench = None
    inputs = list(args.inputs)
    resolutions, fps = args.resolution, args.fps
    if args.benchmark:
        from vidgen.data.benchmarks import load_benchmark

        bench = load_benchmark(args.benchmark)  # a bad definition fails before any decoding
        if not args.from_dir:
            raise DataError(f"--benchmark {args.benchmark} needs --from DIR (its downloaded sources)")
        resolutions = resolutions or list(bench.resolutions)
        fps = fps if fps is not None else bench.fps
    if args.from_dir:
        inputs.append(args.from_dir)
    if not inputs:
        raise DataError("no inputs: give video files or folders (or --benchmark NAME --from DIR)")
    if args.latents:  # a missing VAE fails before any decoding
        from vidgen.data.vae import resolve_vae

        resolve_vae(args.latents, args.vae_sha256)
    cfg = PrepareConfig(inputs=inputs, out=args.out,
                        resolutions=[parse_resolution(r) for r in (resolutions or ["36x64"])],
                        fps=fps, trim=parse_trim(args.trim) if args.trim else None,
                        min_frames=args.min_frames, workers=args.workers, strict=args.strict,
                        backend=args.backend, quality=args.quality, time_pattern=args.time_pattern,
                        overwrite=args.overwrite,
                        benchmark=str(bench.path.resolve()) if bench is not None else None,
                        start=args.start, interval=args.interval, align=args.align,
                        follow_symlinks=args.follow_symlinks)
    report = prepare(cfg)
    print(f"{args.out}: {report['clips']} clips, {report['frames']} frames, "
          f"{len(report['skipped'])} skipped (see report.json)")
    if bench is not None:
        problems = report["benchmark"]["problems"]
        if problems:
            raise DataError(f"{args.out} was written but does not match benchmark {bench.name} "
                            f"({bench.path}): " + "; ".join(problems))
        print(f"matches benchmark {bench.name} ({bench.path})")
    if args.latents:
        from vidgen.data.latents import encode_dataset

        encode_dataset(args.out, args.latents, args.vae_sha256, device=args.device)
    return 0


THUMB_SIDE = 256  # longest side of a contact-sheet frame


def _thumbs(src, count: int) -> np.ndarray:
    """``count`` frames spread over ``src``, each shrunk to THUMB_SIDE (read one at a time:
    memory stays bounded for any frame size) -> uint8 [count, h, w, 3]."""
    from vidgen.data.resize import crop_resize

    h, w = src.meta.height, src.meta.width
    s = min(1.0, THUMB_SIDE / max(h, w))
    size = (max(1, round(h * s)), max(1, round(w * s)))
    box = (0.0, 0.0, float(w), float(h))
    idx = np.linspace(0, len(src) - 1, count).round().astype(int)
    return np.stack([crop_resize(src.get([i])[0], size, box) for i in idx])


def _sheet_path(args, path: Path) -> Path:
    png = Path(args.png) if args.png else Path.cwd() / f"{path.resolve().name or 'data'}_contact_sheet.png"
    folder = png.parent if str(png.parent) else Path(".")
    if folder.exists() and not os.access(folder, os.W_OK):
        raise DataError(f"{png}: cannot write the contact sheet there (the folder is read-only); "
                        "pass --out PATH in a writable folder")
    return png


def _save_sheet(rows: list[np.ndarray], labels: list[str], png: Path, ncols: int) -> None:
    from vidgen.render.layout import contact_sheet, save_png

    # rows: list of uint8 [T, H, W, 3], all at one resolution
    try:
        save_png(png, contact_sheet(np.concatenate(rows), ncols=ncols, labels=labels or None))
    except OSError as exc:
        raise DataError(f"{png}: cannot write the contact sheet ({exc.strerror or exc}); "
                        "pass --out PATH in a writable folder") from None


def cmd_inspect(args) -> int:
    from vidgen.data.manifest import is_prepared, open_prepared
    from vidgen.data.sources import open_source

    path = Path(args.path)
    png = _sheet_path(args, path)  # a read-only destination fails before any decoding
    rows, labels = [], []
    if is_prepared(path):
        m, _, sources = open_prepared(path)  # shards at the largest prepared resolution
        clips = m["clips"]
        lengths = [c["num_frames"] for c in clips]
        print(f"{path}: {len(clips)} clips, {sum(lengths)} frames (min {min(lengths)}, "
              f"median {int(np.median(lengths))}, max {max(lengths)}), resolutions {', '.join(m['resolutions'])}")
        times = [t for c in clips for t in (c.get("times") or [])]
        if times:
            print(f"capture times: {min(times)} .. {max(times)} ({len(times)} frames)")
        for c in clips[:20]:
            aligned = f", aligned (valid {c['align']['valid_rect_xyxy']})" if c.get("align") else ""
            print(f"  {c['id']} {c['name']}: {c['num_frames']} frames, fps {c['fps']}, from {c['source']}{aligned}")
        if len(clips) > 20:
            print(f"  ... {len(clips) - 20} more")
        for c, src in zip(clips[:args.clips], sources):
            rows.append(_thumbs(src, args.frames))
            labels += [c["name"][:16]] + [""] * (args.frames - 1)
    else:
        src = open_source(path, backend=args.backend)
        print(json.dumps(asdict(src.meta), indent=1))
        for s in getattr(src, "skipped", []):
            print(f"skip {s['path']}: {s['reason']}", file=sys.stderr)
        rows.append(_thumbs(src, args.frames))
    _save_sheet(rows, labels, png, args.frames)
    print(f"contact sheet: {png}")
    return 0


def cmd_synth(args) -> int:
    from vidgen.data.manifest import parse_resolution
    from vidgen.data.synthetic import make_drive, make_shapes, make_timelapse

    size = parse_resolution(args.size or ("32x32" if args.kind == "shapes" else "72x128"))
    if args.kind == "shapes":
        if size[0] != size[1]:
            raise DataError(f"--size {args.size}: shapes are square images, e.g. 32x32")
        try:
            objects = tuple(int(v) for v in args.objects.split(","))
        except ValueError:
            raise DataError(f"--objects {args.objects!r}: give counts like 1 or 1,2") from None
        if not objects or any(n not in (1, 2) for n in objects):
            raise DataError(f"--objects {args.objects!r}: shapes per image are 1 or 2")
        paths = make_shapes(args.out, seed=args.seed, size=size[0], count=args.count, objects=objects)
    elif args.kind == "drive":
        paths = make_drive(args.out, seed=args.seed, frames=args.frames, size=size, videos=args.videos)
    else:
        paths = make_timelapse(args.out, seed=args.seed, size=size, days=args.days)
    print(f"{args.out}: {len(paths)} files", file=sys.stderr)
    return 0
