"""`vidgen t2i`: images from text with a trained or imported StyleGAN-T generator."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from vidgen.argtypes import device_name, parse_seeds, positive_int
from vidgen.errors import VidgenError, output_error
from vidgen.fileio import atomic_files

EPILOG = """examples:
  vidgen t2i --net runs/00000-stylegan-t-shapes-32x32-b8 --prompt "a red circle on a blue background" \\
      --psi 0.7 --seeds 0-15 --out grid.png
  vidgen t2i --net RUN --prompt "a red circle on a blue background" --prompt "a green square on a yellow background" \\
      --psi 1.0,0.7,0.5 --seeds 0-7 --out tradeoff.png     # one row per prompt and psi
  vidgen t2i --net runs/imported-sgt --prompts-file prompts.txt --seeds 0-3 --out samples/

psi is the truncation of the latent part of w towards its mean (the text part is never
truncated): 1.0 gives the most variation, lower values follow the text more closely with less
variety (StyleGAN-T's variation / text-alignment control). Seed s draws
z = RandomState(s).randn(z_dim), as the reference's gen_images.py. A .png --out is a grid
(columns: seeds; rows: prompts x psi) with the settings stored in the file; a folder gets one
PNG per image.
"""


HELP = "text-to-image with a StyleGAN-T run (trained or imported)"


def register(subparsers) -> None:
    """`vidgen t2i` and the family's group `vidgen stylegan-t generate|train|eval|import` (the
    last three are added by vidgen/cli.py for every family group)."""
    add_t2i_arguments(subparsers.add_parser("t2i", help=HELP, description=HELP[0].upper() + HELP[1:] + ".",
                                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))
    group = subparsers.add_parser("stylegan-t", help="StyleGAN-T text-to-image GAN: train, generate, eval, import",
                                  description="StyleGAN-T: a text-conditioned GAN (docs/STYLEGAN_T.md).")
    verbs = group.add_subparsers(dest="stylegan_t_command", metavar="COMMAND")
    add_t2i_arguments(verbs.add_parser("generate", help=HELP + " (as `vidgen t2i`)", epilog=EPILOG,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    group.set_defaults(func=lambda args: group.print_help() or 2)


def add_t2i_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", required=True, metavar="RUN", help="stylegan-t run or checkpoint folder")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", metavar="FILE", help="a text file with one prompt per line")
    p.add_argument("--psi", default="1.0", metavar="P[,P..]", help="truncation psi, or a list (default 1.0)")
    p.add_argument("--seeds", default="0-15", help="seed list, e.g. 0-15 or 1,5,9")
    p.add_argument("--noise", choices=("const", "random", "none"), default="const", help="noise inputs")
    p.add_argument("--network", default="G_ema", help="which generator of the checkpoint (G_ema or G)")
    p.add_argument("--batch", type=positive_int, default=16, help="images per generator call")
    p.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--allow-nonfinite", action="store_true", help="load a checkpoint with NaN / inf weights anyway")
    p.add_argument("--out", required=True, metavar="grid.png|DIR")
    p.set_defaults(func=run_t2i)



def parse_psis(text: str) -> list[float]:
    try:
        psis = [float(v) for v in text.split(",")]
    except ValueError:
        psis = []
    if not psis or not all(math.isfinite(v) for v in psis):
        raise VidgenError(f"--psi {text!r}: give finite numbers like 0.7 or 1.0,0.7,0.5")
    return psis


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise VidgenError(f"--prompts-file {path} does not exist")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise VidgenError("give at least one --prompt TEXT (or --prompts-file FILE)")
    return prompts


def run_t2i(args) -> int:
    from vidgen.render.layout import grid
    from vidgen.render.writer import save_png, to_uint8_frames
    from vidgen.stylegan_t.family import StyleGANTSampler, load_generator

    prompts, psis, seeds = read_prompts(args), parse_psis(args.psi), parse_seeds(args.seeds)
    out = Path(args.out)
    if out.suffix.lower() != ".png" and out.exists() and not out.is_dir():
        raise VidgenError(f"--out {out}: exists and is not a folder; give a .png path or a folder")
    device = torch.device(args.device)
    names = (args.network,) if args.network != "G_ema" else ("G_ema", "G")
    t0 = time.perf_counter()
    G, cfg, c = load_generator(args.net, device, names)
    sampler = StyleGANTSampler(G, prompts, noise=args.noise, batch=args.batch)
    rows = []
    for prompt in prompts:
        for psi in psis:
            rows.append(sampler.images(seeds, [prompt] * len(seeds), psi=psi))
    frames = to_uint8_frames(torch.cat(rows), layout="TCHW")
    settings = {"net": str(c.path), "step": c.step, "prompts": prompts, "psi": psis, "seeds": args.seeds,
                "noise": args.noise, "network": args.network, "rows": "prompt x psi", "columns": "seeds"}
    try:
        if out.suffix.lower() == ".png":
            save_png(out, grid(list(frames), ncols=len(seeds)), settings)
        else:
            with atomic_files(out) as tmp:  # all images or none
                k = 0
                for p, prompt in enumerate(prompts):
                    for psi in psis:
                        for s in seeds:
                            save_png(tmp / f"p{p:03d}-psi{psi:g}-seed{s:06d}.png", frames[k],
                                     {**settings, "prompt": prompt, "psi": psi, "seed": s})
                            k += 1
    except OSError as exc:
        raise output_error(exc, out, "no image was added there (what it held before is unchanged)") from None
    print(json.dumps({"out": str(out), "images": len(frames), "prompts": len(prompts), "psi": psis,
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0
