"""`vidgen diffusion train|sample|phema|toy`: EDM2 training, guided sampling, post-hoc EMA
and the 2-D autoguidance toy."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vidgen.errors import VidgenError

TRAIN_EPILOG = """examples:
  vidgen diffusion train --data data/flowers --config configs/diffusion/tiny.yaml
  vidgen diffusion train --config configs/diffusion/edm2-xs-img512.yaml --dry-run
  vidgen diffusion train --data data/flowers --config configs/diffusion/tiny.yaml \\
      --init runs/00001-diffusion-tiny-flowers-32x32-b32 --set loss.sigma_range=[0.002,1.0]
"""
SAMPLE_EPILOG = """examples:
  vidgen diffusion sample --net runs/00001-diffusion-tiny-flowers-32x32-b32 --seeds 0-63 --out grid.png
  vidgen diffusion sample --net RUN --cfg --guidance 2.0 --interval 0.28,2.9 --steps 32 --class 3 --out grid.png
  vidgen diffusion sample --net RUN --guide GUIDE_RUN --guidance 2.0 --seeds 0-15 --out samples/
  vidgen diffusion sample --net LOW_RUN,HIGH_RUN --expert-boundaries 1.0 --seeds 0-15 --out experts.png
"""
PHEMA_EPILOG = """examples:
  vidgen diffusion phema --snapshots runs/00001-diffusion-tiny-flowers-32x32-b32/phema --sigma-rel 0.05,0.10 --out phema-out
  vidgen diffusion phema --snapshots RUN/phema --sigma-rel 0.07 --step 4000 --out phema-out
"""
TOY_EPILOG = """examples:
  vidgen diffusion toy --out toy
  vidgen diffusion toy --out toy --guidance 2.5 --set main_iters=2000
"""


def register(subparsers) -> None:
    from vidgen.train.cli import add_train_arguments
    p = subparsers.add_parser("diffusion", help="EDM2 image diffusion: train, sample, phema, toy",
                              description="EDM/EDM2 image diffusion with CFG, autoguidance and guidance intervals.")
    sub = p.add_subparsers(dest="diffusion_command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="train an EDM2 U-Net on an image folder or prepared dataset",
                       epilog=TRAIN_EPILOG, formatter_class=fmt)
    add_train_arguments(t, with_family=False, with_init=False)
    t.add_argument("--init", metavar="CKPT", help="start from these weights (sets init): fine-tune an expert")
    t.set_defaults(func=run_train)

    s = sub.add_parser("sample", help="sample images with Euler / Heun / stochastic samplers and guidance",
                       epilog=SAMPLE_EPILOG, formatter_class=fmt)
    s.add_argument("--net", required=True, metavar="CKPT", help="run / checkpoint folder or phema .safetensors; "
                   "with --expert-boundaries, one per noise range, comma separated (low noise first)")
    s.add_argument("--expert-boundaries", metavar="S1,S2,..", help="sigma split points of noise-range experts")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--guide", metavar="CKPT", help="autoguidance: a weaker model with the same conditioning")
    g.add_argument("--cfg", action="store_true", help="classifier-free guidance: the net without its class")
    s.add_argument("--guidance", type=float, default=1.0, help="guidance weight w (1 = none)")
    s.add_argument("--interval", metavar="LO,HI", help="guide only when sigma is in (LO, HI], e.g. 0.28,2.9")
    s.add_argument("--steps", type=int, default=32)
    s.add_argument("--solver", choices=("heun", "euler"), default="heun")
    s.add_argument("--churn", type=float, default=0.0, help="S_churn > 0: stochastic sampler")
    s.add_argument("--seeds", default="0-15", help="seed list, e.g. 0-63 or 1,5,9")
    s.add_argument("--class", dest="class_idx", type=int, help="class label (default: seed mod classes)")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True, metavar="grid.png|DIR", help="a .png grid, or a folder of PNGs")
    s.set_defaults(func=run_sample)

    ph = sub.add_parser("phema", help="post-hoc EMA: reconstruct any sigma_rel from power-EMA snapshots",
                        epilog=PHEMA_EPILOG, formatter_class=fmt)
    ph.add_argument("--snapshots", required=True, metavar="DIR", help="the run's phema/ folder")
    ph.add_argument("--sigma-rel", required=True, help="target widths, comma separated (each < 0.2887)")
    ph.add_argument("--out", required=True, metavar="DIR")
    ph.add_argument("--network", help="network name when the folder holds several")
    ph.add_argument("--step", type=int, help="reconstruct at this step (default: the last snapshot)")
    ph.add_argument("--from", dest="sources", help="use only snapshots of these tracked widths, e.g. 0.05,0.10")
    ph.set_defaults(func=run_phema)

    ty = sub.add_parser("toy", help="2-D toy: no guidance vs CFG vs autoguidance (PNG + JSON)",
                        epilog=TOY_EPILOG, formatter_class=fmt)
    ty.add_argument("--out", required=True, metavar="DIR")
    ty.add_argument("--guidance", type=float, help="guidance weight for CFG and autoguidance")
    ty.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a ToyConfig field, e.g. main_iters=2000")
    ty.set_defaults(func=run_toy)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_train(args) -> int:
    from vidgen.diffusion.recipe import DiffusionRecipe
    from vidgen.diffusion.unet import build_denoiser, count_parameters
    from vidgen.train.cli import resolve_config, run_recipe
    if args.init:
        args.overrides = [*args.overrides, f"init={args.init}"]
    if args.dry_run:  # count on the meta device: no memory, no data needed, XXL in seconds
        from vidgen.config import dump_yaml
        cfg = resolve_config(DiffusionRecipe, args)
        print(dump_yaml(cfg), end="")
        n = count_parameters(build_denoiser(cfg.model, device="meta"))
        print(json.dumps({"preset": cfg.model.preset, "parameters": n, "millions": round(n / 1e6, 3)}))
        return 0
    return run_recipe(DiffusionRecipe, args)


def parse_seeds(text: str) -> list[int]:
    out = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise VidgenError(f"--seeds {text!r}: use a range like 0-63 or a list like 1,5,9") from None
    return out


def parse_interval(text: str | None):
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise VidgenError(f"--interval {text!r}: give LO,HI, e.g. 0.28,2.9") from None
    if not 0 <= lo < hi:
        raise VidgenError(f"--interval {text!r}: need 0 <= LO < HI")
    return lo, hi


def run_sample(args) -> int:
    from vidgen.diffusion.recipe import load_denoiser
    from vidgen.diffusion.sample import GuidedDenoiser, SamplerConfig, sample
    from vidgen.render.layout import grid
    from vidgen.render.writer import save_png, to_uint8_frames
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.expert_boundaries:
        from vidgen.diffusion.experts import ExpertDenoiser
        try:
            bounds = [float(v) for v in args.expert_boundaries.split(",")]
        except ValueError:
            raise VidgenError(f"--expert-boundaries {args.expert_boundaries!r}: give sigmas like 0.5,5") from None
        experts = [load_denoiser(p, device)[0] for p in args.net.split(",")]
        net, m = ExpertDenoiser(experts, bounds), experts[0].net.cfg
    else:
        net = load_denoiser(args.net, device)[0]
        m = net.net.cfg
    guide = load_denoiser(args.guide, device)[0] if args.guide else None
    if args.cfg and not m.label_dim:
        raise VidgenError(f"--cfg needs a class-conditional net; {args.net} is unconditional (use --guide)")
    scfg = SamplerConfig(steps=args.steps, solver=args.solver, churn=args.churn, guidance=args.guidance,
                         interval=parse_interval(args.interval))
    scfg.check()
    seeds = parse_seeds(args.seeds)
    images, nfe, guide_nfe, t0 = [], 0, 0, time.perf_counter()
    for i in range(0, len(seeds), args.batch):
        chunk = seeds[i:i + args.batch]
        noise = torch.stack([torch.randn(m.img_channels, m.img_resolution, m.img_resolution,
                                         generator=torch.Generator().manual_seed(s)) for s in chunk]).to(device)
        labels = None
        if m.label_dim:
            labels = torch.tensor([args.class_idx if args.class_idx is not None else s % m.label_dim for s in chunk],
                                  device=device)
        den = GuidedDenoiser(net, guide=guide, cfg=args.cfg, guidance=args.guidance, interval=scfg.interval,
                             labels=labels)
        with torch.no_grad():
            x = sample(den, noise, scfg)
        images.append(x[:, :3].clamp(-1, 1).cpu())  # latent models: the first 3 channels, undecoded
        nfe, guide_nfe = den.nfe, den.guide_nfe
    x = torch.cat(images)
    settings = {"net": str(args.net), "guide": args.guide, "cfg": args.cfg, "guidance": args.guidance,
                "interval": scfg.interval, "steps": args.steps, "solver": args.solver, "churn": args.churn,
                "seeds": args.seeds, "class": args.class_idx, "nfe_per_batch": nfe, "guide_nfe_per_batch": guide_nfe}
    out = Path(args.out)
    frames = to_uint8_frames(x, layout="TCHW")
    if out.suffix.lower() == ".png":
        save_png(out, grid(list(frames)), settings)
    else:
        for s, img in zip(seeds, frames):
            save_png(out / f"seed{s:06d}.png", img, settings)
    print(json.dumps({"out": str(out), "images": len(seeds), "nfe": nfe, "guide_nfe": guide_nfe,
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


def run_phema(args) -> int:
    from vidgen.config import load_yaml
    from vidgen.diffusion.phema import reconstruct, write_reconstruction
    folder = Path(args.snapshots)
    if not folder.is_dir():
        raise VidgenError(f"--snapshots {folder}: not a folder; pass the run's phema/ folder")
    try:
        targets = [float(v) for v in args.sigma_rel.split(",")]
        sources = [float(v) for v in args.sources.split(",")] if args.sources else None
    except ValueError:
        raise VidgenError("--sigma-rel / --from: give numbers like 0.05,0.10") from None
    run_cfg = folder.parent / "config.yaml"
    config = load_yaml(run_cfg) if run_cfg.is_file() else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for state, info in reconstruct(folder, targets, args.network, args.step, sources):
        path = out / f"{info['network']}-phema-{info['step']:09d}-s{info['sigma_rel']:.4f}.safetensors"
        write_reconstruction(path, state, info, config)
        print(json.dumps({"out": str(path), **{k: info[k] for k in ("step", "sigma_rel", "num_snapshots",
                                                                       "profile_error")}}))
    return 0


def run_toy(args) -> int:
    from vidgen.config import load_config
    from vidgen.diffusion.toy2d import ToyConfig, write_toy
    overrides = list(args.overrides) + ([f"guidance={args.guidance}"] if args.guidance is not None else [])
    cfg = load_config(ToyConfig, None, overrides)
    report = write_toy(cfg, Path(args.out), progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({k: report[k] for k in ("methods", "seconds")}))
    return 0
