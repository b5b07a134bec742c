"""`vidgen data prepare|inspect|synth`: build, look at and generate datasets."""

from __future__ import annotations

import argparse
import json
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
With --benchmark the clip count, fps and resolutions are checked against the definition
(recorded in manifest.json); a mismatch exits non-zero (with --strict nothing is written).
Bad inputs are skipped with one line each and listed in DIR/report.json; the exit status is
non-zero only when nothing was usable, or with --strict when anything was skipped."""

INSPECT_EPILOG = """examples:
  vidgen data inspect data/mtb                  # summary + data/mtb/contact_sheet.png
  vidgen data inspect clip.mp4 --png sheet.png  # a raw video or frame folder works too"""

SYNTH_EPILOG = """examples:
  vidgen data synth drive out/drive --seed 0 --frames 600 --size 72x128 --videos 4
  vidgen data synth timelapse out/tl --seed 0 --size 64x64 --days 400
  vidgen data synth shapes out/shapes --size 32x32 --count 4000          # captioned, for text-to-image
  vidgen data synth shapes out/shapes2 --count 4000 --objects 1,2        # one or two shapes per image"""


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
    p.set_defaults(func=cmd_prepare)

    q = sub.add_parser("inspect", help="summary and contact sheet of a dataset or source",
                       epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("path", help="dataset folder (with manifest.json), video, zip or frame folder")
    q.add_argument("--png", help="contact sheet path (default: PATH/contact_sheet.png or PATH.png)")
    q.add_argument("--clips", type=int, default=8, help="clips (rows) in the contact sheet")
    q.add_argument("--frames", type=int, default=8, help="frames per clip in the contact sheet")
    q.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto")
    q.set_defaults(func=cmd_inspect)

    s = sub.add_parser("synth", help="write the procedural sample data (mp4 / jpg)",
                       epilog=SYNTH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("kind", choices=("drive", "timelapse", "shapes"))
    s.add_argument("out", help="output folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", default=None, help="HxW (default 72x128; shapes: 32x32)")
    s.add_argument("--frames", type=int, default=300, help="frames per video (drive)")
    s.add_argument("--videos", type=int, default=3, help="number of videos (drive)")
    s.add_argument("--days", type=int, default=400, help="span in days (timelapse)")
    s.add_argument("--count", type=int, default=4000, help="number of images (shapes)")
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
    cfg = PrepareConfig(inputs=inputs, out=args.out,
                        resolutions=[parse_resolution(r) for r in (resolutions or ["36x64"])],
                        fps=fps, trim=parse_trim(args.trim) if args.trim else None,
                        min_frames=args.min_frames, workers=args.workers, strict=args.strict,
                        backend=args.backend, quality=args.quality, time_pattern=args.time_pattern,
                        overwrite=args.overwrite,
                        benchmark=str(bench.path.resolve()) if bench is not None else None)
    report = prepare(cfg)
    print(f"{args.out}: {report['clips']} clips, {report['frames']} frames, "
          f"{len(report['skipped'])} skipped (see report.json)")
    if bench is not None:
        problems = report["benchmark"]["problems"]
        if problems:
            raise DataError(f"{args.out} was written but does not match benchmark {bench.name} "
                            f"({bench.path}): " + "; ".join(problems))
        print(f"matches benchmark {bench.name} ({bench.path})")
    return 0


def _sheet(rows: list[np.ndarray], labels: list[str], png: Path, ncols: int) -> None:
    from vidgen.render.layout import contact_sheet, save_png

    # rows: list of uint8 [T, H, W, 3], all at one resolution
    save_png(png, contact_sheet(np.concatenate(rows), ncols=ncols, labels=labels or None))


def cmd_inspect(args) -> int:
    from vidgen.data.prepare import is_prepared, open_prepared
    from vidgen.data.sources import open_source

    path = Path(args.path)
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
            print(f"  {c['id']} {c['name']}: {c['num_frames']} frames, fps {c['fps']}, from {c['source']}")
        if len(clips) > 20:
            print(f"  ... {len(clips) - 20} more")
        for c, src in zip(clips[:args.clips], sources):
            rows.append(src.get(np.linspace(0, len(src) - 1, args.frames).round().astype(int)))
            labels += [c["name"][:16]] + [""] * (args.frames - 1)
        png = Path(args.png) if args.png else path / "contact_sheet.png"
    else:
        src = open_source(path, backend=args.backend)
        print(json.dumps(asdict(src.meta), indent=1))
        rows.append(src.get(np.linspace(0, len(src) - 1, args.frames).round().astype(int)))
        png = Path(args.png) if args.png else path.with_name(path.name + "_sheet.png")
    _sheet(rows, labels, png, args.frames)
    print(f"contact sheet: {png}")
    return 0


def cmd_synth(args) -> int:
    from vidgen.data.prepare import parse_resolution
    from vidgen.data.synthetic import make_drive, make_shapes, make_timelapse

    size = parse_resolution(args.size or ("32x32" if args.kind == "shapes" else "72x128"))
    if args.kind == "shapes":
        if size[0] != size[1]:
            raise DataError(f"--size {args.size}: shapes are square images, e.g. 32x32")
        try:
            objects = tuple(int(v) for v in args.objects.split(","))
        except ValueError:
            raise DataError(f"--objects {args.objects!r}: give counts like 1 or 1,2") from None
        if not objects or any(n not in (1, 2) for n in objects) or args.count < 1:
            raise DataError(f"--objects {args.objects!r} / --count {args.count}: objects are 1 or 2, count >= 1")
        paths = make_shapes(args.out, seed=args.seed, size=size[0], count=args.count, objects=objects)
    elif args.kind == "drive":
        paths = make_drive(args.out, seed=args.seed, frames=args.frames, size=size, videos=args.videos)
    else:
        paths = make_timelapse(args.out, seed=args.seed, size=size, days=args.days)
    print(f"{args.out}: {len(paths)} files", file=sys.stderr)
    return 0
