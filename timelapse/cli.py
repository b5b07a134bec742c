"""`timelapse` command line: train | render | invert | eval | inspect (docs/METHODS.md section 2)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
import sys
from pathlib import Path

import numpy as np

from vidgen.cli import Parser, run
from vidgen.fileio import write_json
from vidgen.argtypes import device_name, finite_float, non_negative_int, positive_float, positive_int
from vidgen.errors import ConfigError, VidgenError, output_error

TRAIN_EPILOG = """examples:
  timelapse train --data ../shared/data/timelapse/vegas_webcam --config configs/timelapse/tiny.yaml
  timelapse train --data frames/ --config configs/timelapse/paper-512.yaml --skip 1200:1260 --resume auto
  timelapse train --data frames/ --config configs/timelapse/tiny.yaml --set engine.steps=50 --dry-run
  timelapse train --data timelapse.mp4 --start 2023-06-13T03:11:46 --interval 60s --config configs/timelapse/tiny.yaml
  timelapse train --data webcam/ --time-pattern '%Y_%m%d_%H%M0' --align --config configs/timelapse/tiny.yaml
A time-lapse delivered as one video: frame i was captured at --start + i * --interval (without
--start, the video's creation time). --align registers every frame to a reference frame and
crops to the area all frames cover (a shaking or drifting webcam).
"""

RENDER_EPILOG = """examples:
  timelapse render stabilize -c runs/00000-timelapse-x --dates 2021-03-01..2021-10-31 --every 1d --hour 12 --out growth.mp4
  timelapse render stabilize -c RUN --times-from frames/ --hour 9 --year hold --out stable.gif
  timelapse render stabilize -c RUN --dates 2021-06-01..2021-06-03 --every 1h --hour 12 --layers 0:6 --out coarse.mp4
  timelapse render sweep -c RUN --factor day --frames 48 --base 2021-06-01 --out day.mp4
  timelapse render restyle -c RUN --dates 2021-03-01..2021-04-30 --seeds 1,2,3 --out weathers.mp4
  timelapse render restyle -c RUN --dates 2021-03-01..2021-04-30 --seeds 1,2 --interp --out morph.mp4
  timelapse render grid -c RUN --factor year --seeds 0,1,2 --frames 8 --out grid.png
  timelapse render stack -c RUN --dates 2021-03-01..2021-10-31 --out stack.png
  timelapse render real -c RUN --latents latents.safetensors --mode weather --out stabilised.mp4
  timelapse render stabilize -c RUN --times-from frames/ --hour 12 --compare-real frames/ --out side_by_side.mp4
  timelapse render --from growth.mp4 --out again.mp4     (reproduce a render from its file)
"""

INVERT_EPILOG = """examples:
  timelapse invert -c runs/00000-timelapse-x --data frames/ --out latents.safetensors
  timelapse invert -c RUN --data frames/ --out latents.safetensors --steps 500 --w-plus   (rerun to resume)
"""

EVAL_EPILOG = """examples:
  timelapse eval -c runs/00000-timelapse-x --ratios 512 --out ratios.json
  timelapse eval -c RUN --data frames/ --fid 10000
"""

INSPECT_EPILOG = """examples:
  timelapse inspect --data ../shared/data/timelapse/chamonix
  timelapse inspect -c runs/00000-timelapse-x
"""


def _device(name: str) -> str:
    return name  # resolved and checked when parsed (vidgen.argtypes.device_name)


def hour_of_day(text: str) -> float:
    value = finite_float(text)
    if not 0 <= value <= 24:
        raise argparse.ArgumentTypeError(f"must be an hour of the day in 0..24, got {text!r}")
    return value


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 1,2,3") from None


# --- train -------------------------------------------------------------------------------------
def run_train(args: argparse.Namespace) -> int:
    from vidgen.train.cli import run_recipe
    from timelapse.frames import parse_skip
    from timelapse.recipe import TimelapseRecipe

    if args.data is None:
        raise ConfigError("timelapse train needs --data DIR (a prepared dataset or a folder of time-stamped frames)")
    if args.skip:
        parse_skip(args.skip)  # a bad range is reported before anything loads
        args.overrides.append(f"data.skip={json.dumps(args.skip)}")
    # text keys take the value as written (quoting it would put the quotes into the pattern)
    if args.time_pattern:
        args.overrides.append(f"data.time_pattern={args.time_pattern}")
    if args.start:
        args.overrides.append(f"data.start={args.start}")
    if args.interval:
        args.overrides.append(f"data.interval={args.interval}")
    if args.align:
        args.overrides.append("data.align=true")
    return run_recipe(TimelapseRecipe, args)


# --- render ------------------------------------------------------------------------------------
RENDER_KEYS = ("mode", "checkpoint", "dates", "every", "hour", "times_from", "skip", "seed", "seeds", "psi",
               "year", "factor", "frames", "base", "interp", "latents", "real_mode", "fps", "stack_axis", "layers",
               "compare_real")


def parse_layers(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    a, sep, b = text.partition(":")
    try:
        return int(a), int(b)
    except ValueError:
        raise ConfigError(f"--layers {text!r}: expected A:B w-layer numbers, e.g. 0:4 (coarse styles)") from None


def render_settings(args: argparse.Namespace) -> dict:
    if args.from_file:
        from vidgen.render.writer import read_settings

        s = read_settings(args.from_file)
        if s.get("tool") != "timelapse render":
            raise VidgenError(f"{args.from_file} was not made by `timelapse render`")
        return {k: s[k] for k in RENDER_KEYS if k in s}
    if args.mode is None:
        raise ConfigError("give a render mode (stabilize, sweep, restyle, grid, stack, real) or --from FILE")
    if args.checkpoint is None:
        raise ConfigError("timelapse render needs -c/--checkpoint RUN_OR_CHECKPOINT")
    s = {k: getattr(args, k) for k in RENDER_KEYS}
    if s["hour"] is None and s["mode"] != "real":
        s["hour"] = 12.0  # time of day held at noon unless told otherwise
    return s


def capture_seconds(s: dict, axis) -> np.ndarray:
    """The dates to render: --dates/--every, a dataset's capture times, or the whole span daily."""
    from timelapse.time import DAY, date_range

    if s.get("dates"):
        return date_range(s["dates"], s.get("every") or "1d", s.get("hour"))
    if s.get("times_from"):
        from timelapse.frames import TimelapseFrames

        return TimelapseFrames(s["times_from"], 8, s.get("skip") or ()).seconds
    return axis.start + np.arange(0, axis.num_days) * DAY + (s.get("hour") or 0) * 3600.0


def do_render(s: dict, out: str, device: str = "cpu", chunk: int = 16) -> Path:
    from vidgen.render.layout import contact_sheet, stack_strip
    from vidgen.render.writer import open_writer, save_png
    from timelapse import rerender as rr
    from timelapse.invert import read_latents
    from timelapse.time import parse_date

    G, info = rr.load_generator(s["checkpoint"], device)
    if s.get("dates"):
        t = G.axis.normalize(capture_seconds(s, G.axis))
        outside = int(((t < 0) | (t > 1)).sum())
        if outside:
            print(f"note: {outside} of {len(t)} dates lie outside the training sequence "
                  f"(first day {datetime.fromtimestamp(G.axis.start, tz=timezone.utc):%Y-%m-%d}, "
                  f"{G.axis.num_days} days); the trend is extrapolated there", file=sys.stderr)
    mode, seeds = s["mode"], _ints(s.get("seeds") or str(s.get("seed", 0)))
    settings = {"tool": "timelapse render", **s, "step": info["step"], "axis": G.axis.to_dict()}
    base = parse_date(s["base"]).timestamp() if s.get("base") else G.axis.seconds(0.5).item()
    image = mode in ("grid", "stack")
    if image and Path(out).suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: `render {mode}` makes one image; give a .png path")
    if image and s.get("compare_real"):
        raise ConfigError(f"--compare-real makes a video of generated and real frames; `render {mode}` makes one "
                          "image (use stabilize, sweep, restyle or real)")
    if mode == "grid":
        plan = rr.plan_sweep(G, s["factor"], base, s["frames"], seeds, s.get("hour") or 12.0, s["psi"])
        frames = rr.render_all(G, plan, chunk)
        return save_png(out, contact_sheet(frames, ncols=s["frames"]), settings)
    if mode == "stack":
        plan = (rr.plan_sweep(G, s["factor"], base, s["frames"], seeds[:1], s.get("hour") or 12.0, s["psi"])
                if s.get("factor") else
                rr.plan_stabilize(G, capture_seconds(s, G.axis), seeds[0], s.get("hour"), s["year"], False, s["psi"]))
        return save_png(out, stack_strip(rr.render_all(G, plan, chunk), axis=s.get("stack_axis", 1)), settings)
    if mode == "stabilize":
        plans = [rr.plan_stabilize(G, capture_seconds(s, G.axis), seeds[0], s.get("hour"), s["year"], False, s["psi"],
                                   parse_layers(s.get("layers")))]
    elif mode == "sweep":
        plans = [rr.plan_sweep(G, s["factor"], base, s["frames"], seeds[:1], s.get("hour") or 12.0, s["psi"])]
    elif mode == "restyle":
        plans = rr.plan_restyle(G, capture_seconds(s, G.axis), seeds, s.get("hour"), bool(s.get("interp")), s["psi"])
    elif mode == "real":
        if not s.get("latents"):
            raise ConfigError("render real needs --latents FILE (from `timelapse invert`)")
        latents, _ = read_latents(s["latents"])
        if not bool(latents["done"].all()):
            raise VidgenError(f"{s['latents']}: the inversion is unfinished; rerun `timelapse invert` to complete it")
        seed = seeds[0] if s.get("seeds") else None
        plans = [rr.plan_real(G, latents, s.get("real_mode") or "weather", seed, s.get("hour"))]
    else:
        raise ConfigError(f"unknown render mode {mode!r}; choose one of {', '.join(rr.MODES)}")
    if s.get("compare_real"):
        from timelapse.compare import depicted_seconds, open_real, with_real

        x0, y0, x1, y1 = (int(v) for v in G.out_rect)
        real = open_real(s["compare_real"], (y1 - y0, x1 - x0))
        parts = zip(*(rr.render(G, p, chunk) for p in plans))
        streams = with_real((list(p) for p in parts), depicted_seconds(G.axis, plans[0].t), real)
    else:
        streams = rr.tiled(G, plans, chunk) if len(plans) > 1 else rr.render(G, plans[0], chunk)
    with open_writer(out, s.get("fps") or 12, settings) as writer:
        for frames in streams:
            writer.append(frames)
    return Path(out)


def run_render(args: argparse.Namespace) -> int:
    s = render_settings(args)
    if args.out is None:
        raise ConfigError("timelapse render needs --out FILE (.mp4, .gif, .webm, a folder of pngs, or .png)")
    try:
        path = do_render(s, args.out, _device(args.device), args.chunk)
    except OSError as exc:
        raise output_error(exc, args.out, "nothing was written (a file "
                          "already there is unchanged, the partial output was removed)") from None
    print(f"wrote {path}")
    return 0


# --- invert / eval / inspect -------------------------------------------------------------------
def run_invert(args: argparse.Namespace) -> int:
    from timelapse.frames import TimelapseFrames
    from timelapse.invert import InvertConfig, invert_sequence
    from timelapse.rerender import load_generator

    G, info = load_generator(args.checkpoint, _device(args.device))
    data = TimelapseFrames(args.data, G.cfg.resolution, args.skip, args.time_pattern)
    # The model's own time axis, not the dataset's: the same capture time means the same t.
    data.t = G.axis.normalize(data.seconds).astype(np.float32)
    cfg = InvertConfig(steps=args.steps, lr=args.lr, w_plus=args.w_plus, noise=not args.no_noise, seed=args.seed)
    try:
        state = invert_sequence(G, data, args.out, cfg, {**info, "data": str(args.data)})
    except OSError as exc:
        raise output_error(exc, args.out, "the frames inverted before the "
                          "last save are kept there: rerun the same command to resume") from None
    print(f"wrote {args.out}: {int(state['done'].sum())} frames, mean MSE {float(state['mse'].mean()):.4f}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from timelapse.metrics import fid, variance_ratios
    from timelapse.rerender import load_generator

    G, info = load_generator(args.checkpoint, _device(args.device))
    report = {"checkpoint": info["checkpoint"], "step": info["step"]}
    if args.ratios:
        report["variance_ratios"] = variance_ratios(G, n=args.ratios, seed=args.seed)
        report["variance_ratios_protocol"] = {"pairs": args.ratios, "t": "uniform [0, 1]", "seed": args.seed}
    if args.fid:
        if not args.data:
            raise ConfigError("--fid needs --data DIR (the real frames and their capture times)")
        from timelapse.frames import TimelapseFrames

        data = TimelapseFrames(args.data, G.cfg.resolution)
        data.t = G.axis.normalize(data.seconds).astype(np.float32)
        report["fid"] = fid(G, data, num_fake=args.fid, seed=args.seed)
    print(json.dumps(report, indent=1))
    if args.out:
        try:
            write_json(args.out, report)
        except OSError as exc:
            raise output_error(exc, args.out, "the report is printed above, "
                              "a file already there is unchanged") from None
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    if args.checkpoint:
        from timelapse.rerender import load_generator

        from vidgen.nn import count_parameters

        G, info = load_generator(args.checkpoint)
        print(json.dumps({**info, "axis": G.axis.to_dict(), "factors": G.axis.factors,
                          "parameters": count_parameters(G), "num_ws": G.num_ws}, indent=1))
        return 0
    if not args.data:
        raise ConfigError("timelapse inspect needs --data DIR or -c CHECKPOINT")
    from timelapse.frames import TimelapseFrames

    d = TimelapseFrames(args.data, args.resolution, args.skip, args.time_pattern)
    fmt = lambda s: datetime.fromtimestamp(float(s), tz=timezone.utc).isoformat()  # noqa: E731
    gaps = np.diff(d.seconds) / 3600
    print(json.dumps({"frames": len(d), "first": fmt(d.seconds[0]), "last": fmt(d.seconds[-1]),
                      "axis": d.axis.to_dict(), "factors": d.axis.factors, "frame_size_hw": d.frame_size,
                      "valid_rect_xyxy": d.rect, "gap_hours": {"min": float(gaps.min()), "median": float(np.median(gaps)),
                                                               "max": float(gaps.max())},
                      "skipped": d.base.skipped[:20]}, indent=1))
    return 0


# --- parser ------------------------------------------------------------------------------------
def _parser(sub, name, help_, epilog, func):
    p = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


DESCRIPTION = "Time-lapse GAN: train on time-stamped frames, re-render sequences, invert real frames, evaluate."


def build_parser() -> argparse.ArgumentParser:
    """The `timelapse` script; `vidgen timelapse ...` has the same commands (see register)."""
    parser = Parser(prog="timelapse", description=DESCRIPTION,
                                     epilog="Run `timelapse COMMAND --help` for the options and examples of each.")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def register(subparsers) -> None:
    """`vidgen timelapse train|render|invert|eval|inspect` (the same as the `timelapse` script)."""
    p = subparsers.add_parser("timelapse", help="time-lapse GAN: train, render, invert, eval, inspect, import",
                              description=DESCRIPTION,
                              epilog="Run `vidgen timelapse COMMAND --help` for the options and examples of each.")
    add_commands(p.add_subparsers(dest="timelapse_command", metavar="COMMAND"))
    p.set_defaults(func=lambda args: p.print_help() or 2)


def add_commands(sub) -> None:
    from vidgen.train.cli import add_train_arguments

    p = _parser(sub, "train", "train on a folder of time-stamped frames or a prepared dataset", TRAIN_EPILOG, run_train)
    add_train_arguments(p, with_family=False)
    p.add_argument("--skip", action="append", default=[], metavar="A:B",
                   help="leave out frames A..B-1 (capture order; repeatable)")
    p.add_argument("--time-pattern", dest="time_pattern", default=None,
                   help="strftime pattern of the frame names, e.g. %%Y_%%m%%d_%%H%%M0 (default: automatic)")
    p.add_argument("--start", metavar="TIME", default=None,
                   help="--data is a video: capture time of its first frame (ISO 8601, UTC; default: its creation time)")
    p.add_argument("--interval", metavar="DT", default=None,
                   help="--data is a video: time between its frames, e.g. 60s, 15m, 1h")
    p.add_argument("--align", action="store_true",
                   help="register the frames to a reference frame and crop to the common area (shaky webcams)")

    p = _parser(sub, "render", "re-render a sequence with a trained generator", RENDER_EPILOG, run_render)
    p.add_argument("mode", nargs="?", choices=("stabilize", "sweep", "restyle", "grid", "stack", "real"))
    p.add_argument("-c", "--checkpoint", metavar="RUN", help="run folder or checkpoint folder")
    p.add_argument("--out", metavar="FILE", help=".mp4 / .gif / .webm / folder of pngs (.png for grid, stack)")
    p.add_argument("--from", dest="from_file", metavar="FILE", help="repeat the render whose settings FILE embeds")
    p.add_argument("--dates", metavar="FIRST..LAST", help="UTC dates, e.g. 2021-03-01..2021-10-31")
    p.add_argument("--every", default="1d", help="step between dates: 30m, 6h, 1d, 1w (default 1d)")
    p.add_argument("--hour", type=hour_of_day, default=None, help="time of day held (UTC hours; default 12 except real)")
    p.add_argument("--times-from", dest="times_from", metavar="DIR", help="use a dataset's capture times as dates")
    p.add_argument("--skip", action="append", default=[], metavar="A:B", help="with --times-from: frames left out")
    p.add_argument("--seed", type=int, default=0, help="weather seed (z and noise)")
    p.add_argument("--seeds", default=None, help="several weather seeds, e.g. 1,2,3 (restyle, grid, real)")
    p.add_argument("--psi", type=finite_float, default=1.0, help="truncation towards the average weather")
    p.add_argument("--year", default="follow", choices=("follow", "hold"), help="stabilize: yearly phase")
    p.add_argument("--layers", metavar="A:B", default=None,
                   help="stabilize: hold the time of day / year only in w layers A..B-1 (e.g. 0:4 coarse)")
    p.add_argument("--factor", choices=("trend", "year", "day"), default=None, help="sweep/grid/stack: moving factor")
    p.add_argument("--frames", type=positive_int, default=48, help="sweep/grid: frames over the factor's range")
    p.add_argument("--base", metavar="DATE", help="sweep/grid: date at which the other factors are held")
    p.add_argument("--interp", action="store_true", help="restyle: interpolate the weather between --seeds")
    p.add_argument("--latents", metavar="FILE", help="real: output of `timelapse invert`")
    p.add_argument("--mode", dest="real_mode", choices=("weather", "hour"), default=None,
                   help="real: one weather for all frames, or each frame at --hour")
    p.add_argument("--compare-real", dest="compare_real", metavar="DIR",
                   help="put the real frame of DIR nearest in time beside each generated frame")
    p.add_argument("--fps", type=positive_float, default=12.0)
    p.add_argument("--stack-axis", dest="stack_axis", type=int, default=1, choices=(0, 1))
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--chunk", type=positive_int, default=16, help="frames rendered at once")
    p.add_argument("--allow-nonfinite", action="store_true", help="load a checkpoint with NaN / inf weights anyway")

    p = _parser(sub, "invert", "fit each real frame's latent and noise given its capture time", INVERT_EPILOG, run_invert)
    p.add_argument("-c", "--checkpoint", required=True, metavar="RUN")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="FILE.safetensors")
    p.add_argument("--skip", action="append", default=[], metavar="A:B")
    p.add_argument("--time-pattern", dest="time_pattern", default=None, help="strftime pattern of the file names")
    p.add_argument("--steps", type=positive_int, default=300)
    p.add_argument("--lr", type=positive_float, default=0.05)
    p.add_argument("--w-plus", dest="w_plus", action="store_true", help="one w per layer")
    p.add_argument("--no-noise", dest="no_noise", action="store_true", help="keep the noise maps fixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--allow-nonfinite", action="store_true", help="load a checkpoint with NaN / inf weights anyway")

    p = _parser(sub, "eval", "variance ratios and equal-time FID of a checkpoint", EVAL_EPILOG, run_eval)
    p.add_argument("-c", "--checkpoint", required=True, metavar="RUN")
    p.add_argument("--ratios", type=non_negative_int, default=256, help="image pairs per variance term (0: skip)")
    p.add_argument("--fid", type=non_negative_int, default=0, help="generated images for FID (0: skip)")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE.json")
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--allow-nonfinite", action="store_true", help="load a checkpoint with NaN / inf weights anyway")

    p = _parser(sub, "inspect", "summarise a dataset's capture times or a checkpoint", INSPECT_EPILOG, run_inspect)
    p.add_argument("-c", "--checkpoint", metavar="RUN")
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--resolution", type=positive_int, default=256)
    p.add_argument("--skip", action="append", default=[], metavar="A:B")
    p.add_argument("--time-pattern", dest="time_pattern", default=None, help="strftime pattern of the frame names")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
