"""`vidgen generate`: render a long video from long-video GAN checkpoints, window by window."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vidgen.errors import VidgenError

EPILOG = """examples:
  # 1000 low-res frames (36x64) from the newest checkpoint of a run
  vidgen generate --lowres runs/00000-lvg-lowres-drive-36x64-b64 --frames 1000 --seed 7 --out drive.mp4

  # super-resolved (144x256), also keeping the low-res frames next to it (drive_lowres.mp4)
  vidgen generate --lowres runs/00000-lvg-lowres-drive-36x64-b64 \\
      --superres runs/00001-lvg-superres-drive-144x256-b32 --frames 1000 --seed 7 --out drive.mp4 --save-lowres

Memory does not grow with --frames: each window of --window frames is computed from the
seed alone (plus a fixed margin) and written at once. The settings (checkpoints, steps,
seed, frames) are embedded in the file's metadata.
"""


HELP = "render a long video from long-video GAN checkpoints"


def register(subparsers) -> None:
    """`vidgen generate` and the long-video GAN's group `vidgen lvg generate|train|eval|import`
    (the last three are added by vidgen/cli.py for every family group)."""
    add_generate_arguments(subparsers.add_parser("generate", help=HELP, description=__doc__, epilog=EPILOG,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
    group = subparsers.add_parser("lvg", help="long-video GAN: train, generate, eval, import",
                                  description="Long-video GAN: a low-res generator on long clips and a super-res "
                                              "generator on short clips (docs/LVG.md).")
    verbs = group.add_subparsers(dest="lvg_command", metavar="COMMAND")
    add_generate_arguments(verbs.add_parser("generate", help=HELP, description=__doc__, epilog=EPILOG,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    group.set_defaults(func=lambda args: group.print_help() or 2)


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lowres", required=True, metavar="CKPT", help="lvg-lowres run folder or checkpoint folder")
    p.add_argument("--superres", metavar="CKPT", help="lvg-superres run folder or checkpoint folder (optional)")
    p.add_argument("--frames", type=int, default=300, metavar="N", help="number of frames (default 300)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="video seed (default 0)")
    p.add_argument("--start", type=int, default=0, metavar="F", help="first frame (default 0): any part of the endless video")
    p.add_argument("--out", required=True, metavar="FILE", help="output video (.mp4, .webm, .gif or a folder for png frames)")
    p.add_argument("--save-lowres", action="store_true",
                   help="with --superres: also write the low-res frames to FILE_lowres.EXT")
    p.add_argument("--window", type=int, default=64, metavar="W", help="frames computed per window (default 64)")
    p.add_argument("--fps", type=float, default=30.0, metavar="F", help="frames per second (default 30)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.set_defaults(func=run_generate)


def lowres_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_lowres{out.suffix}")


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from vidgen.render.stream import render_to_file, load_generator
    from vidgen.train.checkpoint import read_checkpoint

    if args.frames < 1:
        raise VidgenError(f"--frames must be at least 1; got {args.frames}")
    if args.window < 1:
        raise VidgenError(f"--window must be at least 1; got {args.window}")
    if args.save_lowres and not args.superres:
        raise VidgenError("--save-lowres needs --superres (without it the output already is the low-res video)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gen = load_generator(args.lowres, args.superres, device=device)
    low = read_checkpoint(args.lowres)
    settings = {"command": "vidgen generate", "lowres": str(low.path), "lowres_step": low.step,
                "seed": args.seed, "start": args.start, "frames": args.frames, "fps": args.fps,
                "window": args.window}
    if args.superres:
        sr = read_checkpoint(args.superres)
        settings.update(superres=str(sr.path), superres_step=sr.step)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    render_to_file(gen, args.seed, args.frames, out, fps=args.fps, window=args.window, settings=settings,
                   lowres_out=lowres_path(out) if args.save_lowres else None, start=args.start)
    h, w = gen.frame_size
    print(f"wrote {out} ({args.frames} frames, {h}x{w}, {time.perf_counter() - t0:.1f} s)")
    if args.save_lowres:
        print(f"wrote {lowres_path(out)}")
    return 0
