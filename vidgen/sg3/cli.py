"""`vidgen sg3 generate`: images and latent walks from a trained or imported StyleGAN3 run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from tqdm import tqdm

from vidgen.argtypes import device_name, finite_float, non_negative_int, parse_seeds, positive_float, positive_int
from vidgen.errors import VidgenError, output_error
from vidgen.fileio import atomic_files

EPILOG = """examples:
  # a 4x4 grid of seeds 0..15 with truncation 0.7 (class 3 of a conditional model)
  vidgen sg3 generate --run runs/00002-sg3-t-afhq-512x512-b32 --seeds 0-15 --psi 0.7 --class 3 --out grid.png

  # an imported StyleGAN3 snapshot, one PNG per seed, the camera moved and turned
  vidgen import stylegan3-r-ffhqu-1024x1024.pkl --out runs/r-ffhqu
  vidgen sg3 generate --run runs/r-ffhqu --seeds 1,5,9 --translate 0.1,-0.2 --rotate 15 --out seeds/

  # a 120-frame walk through the latents of seeds 0..5 (looping), and one that pans the image
  vidgen sg3 generate --run RUN --seeds 0-5 --interp --frames 120 --out walk.mp4
  vidgen sg3 generate --run RUN --seeds 7 --pan 0.25,0 --frames 90 --out pan.mp4

Seeds name the same latents as StyleGAN's gen_images.py (numpy RandomState(seed)), so an
imported model draws the images its authors published for those seeds. --translate is in
units of the image size (0.1 = a tenth of it), --rotate in degrees; both move the
continuous Fourier input, so sub-pixel motion stays alias-free.
"""



def _pair(text: str | None, flag: str) -> tuple[float, float]:
    if not text:
        return 0.0, 0.0
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise VidgenError(f"{flag} {text!r}: expected two numbers X,Y, e.g. 0.1,-0.2") from None
    return x, y


def image_transform(translate: tuple[float, float] = (0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The input transform that shows the image moved by ``translate`` (fractions of its size)
    and turned by ``rotate`` degrees: the inverse of that motion (SG3 §3.1, as gen_images.py)."""
    a = math.radians(rotate)
    m = torch.tensor([[math.cos(a), math.sin(a), translate[0]], [-math.sin(a), math.cos(a), translate[1]],
                      [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.linalg.inv(m).float()


def catmull_rom(keys: torch.Tensor, frames: int) -> torch.Tensor:
    """A closed Catmull-Rom curve through ``keys`` [K, ...]: [frames, ...] with frame 0 at
    keys[0] and equal time per segment (the walk loops back to the first key)."""
    K = keys.shape[0]
    t = torch.arange(frames, dtype=torch.float64) * K / frames
    i = t.floor().long()
    u = (t - i).to(keys.dtype).reshape(-1, *([1] * (keys.ndim - 1)))
    p0, p1, p2, p3 = (keys[(i + d) % K] for d in (-1, 0, 1, 2))
    return 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2 + (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)


def run_generate(args: argparse.Namespace) -> int:
    from vidgen.render.layout import grid
    from vidgen.render.writer import open_writer, save_png, to_uint8_frames
    from vidgen.sg3.family import SG3Sampler, load_generator

    seeds = parse_seeds(args.seeds)
    if args.frames < 1:
        raise VidgenError(f"--frames must be >= 1; got {args.frames}")
    G = load_generator(args.run, args.device)
    sampler = SG3Sampler(G, psi=args.psi, class_index=args.class_idx, batch=args.batch)
    transform = image_transform(_pair(args.translate, "--translate"), args.rotate)
    pan = _pair(args.pan, "--pan")
    settings = {"run": str(args.run), "seeds": args.seeds, "psi": args.psi, "class": args.class_idx,
                "translate": args.translate, "rotate": args.rotate}
    out = Path(args.out)
    video = args.interp or args.pan
    if not video:
        images = to_uint8_frames(sampler.render(seeds, transform).clamp(-1, 1), layout="TCHW")
        try:
            if out.suffix.lower() == ".png":
                save_png(out, grid(images, ncols=args.cols), settings)
                print(f"wrote {out} ({len(seeds)} images)")
            else:
                with atomic_files(out) as tmp:  # all images or none
                    for s, img in zip(seeds, images):
                        save_png(tmp / f"seed{s:04d}.png", img, {**settings, "seeds": str(s)})
                print(f"wrote {len(seeds)} images to {out}/")
        except OSError as exc:
            raise output_error(exc, out, "no image was added there (what it held before is unchanged)") from None
        return 0
    with torch.no_grad():
        keys = sampler.ws(seeds)  # [K, num_ws, w_dim]
        ws = catmull_rom(keys, args.frames) if args.interp and len(seeds) > 1 else keys[:1].expand(args.frames, -1, -1)
    settings.update({"interp": args.interp, "pan": args.pan, "frames": args.frames, "fps": args.fps})
    tx, ty = _pair(args.translate, "--translate")
    try:
        with open_writer(out, args.fps, settings) as writer, tqdm(total=args.frames, unit="frame") as bar:
            for f0 in range(0, args.frames, args.batch):
                f1 = min(f0 + args.batch, args.frames)
                # the pan moves the camera by pan * f / frames (fractions of the image) at frame f
                m = torch.stack([image_transform((tx + pan[0] * f / args.frames, ty + pan[1] * f / args.frames),
                                                 args.rotate) for f in range(f0, f1)])
                with torch.no_grad():
                    chunk = G.synthesis(ws[f0:f1], transform=m.to(ws.device)).float().cpu()
                writer.append(to_uint8_frames(chunk.clamp(-1, 1), layout="TCHW"))
                bar.update(f1 - f0)
    except OSError as exc:
        raise output_error(exc, out, "nothing was written (a file already there is unchanged, the partial "
                                     "output was removed)") from None
    print(f"wrote {out} ({args.frames} frames at {args.fps} fps)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("sg3", help="StyleGAN3: generate, train, eval, import",
                              description="StyleGAN3 (configs T and R): generate images and videos from a run; "
                                          "train, eval and import as `vidgen train|eval|import` do.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=lambda args: p.print_help() or 2)
    sub = p.add_subparsers(dest="sg3_command", metavar="COMMAND")
    g = sub.add_parser("generate", help="images (png grid or folder) or a video of a latent walk / camera pan",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--run", required=True, help="sg3 run folder or checkpoint (trained, or made by `vidgen import`)")
    g.add_argument("--seeds", default="0-15", help="seeds: a range 0-15, a list 1,5,9, or both")
    g.add_argument("--psi", type=finite_float, default=1.0, help="truncation psi (1: none; 0.7 is common)")
    g.add_argument("--class", dest="class_idx", type=non_negative_int, default=None,
                   help="class of a conditional model (default: seed mod number of classes)")
    g.add_argument("--translate", metavar="X,Y", help="move the image by X,Y (fractions of its size)")
    g.add_argument("--rotate", type=finite_float, default=0.0, help="turn the image by this many degrees")
    g.add_argument("--out", required=True, help="grid.png, a folder for one PNG per seed, or a video (.mp4/.webm/.gif)")
    g.add_argument("--cols", type=positive_int, default=None, help="grid columns (default: near square)")
    g.add_argument("--interp", action="store_true", help="a video walking through the seeds' latents (looping)")
    g.add_argument("--pan", metavar="DX,DY", help="a video moving the camera by DX,DY over its length")
    g.add_argument("--frames", type=positive_int, default=120, help="video length in frames")
    g.add_argument("--fps", type=positive_float, default=30.0, help="video frame rate")
    g.add_argument("--batch", type=positive_int, default=8, help="images per generator call")
    g.add_argument("--device", type=device_name, default="cpu", help="torch device: cpu (default), cuda or auto")
    g.add_argument("--allow-nonfinite", action="store_true", help="load a checkpoint with NaN / inf weights anyway")
    g.set_defaults(func=run_generate)
