"""`vidgen diffusion train|sample|phema|toy`: EDM2 training, guided sampling, post-hoc EMA
and the 2-D autoguidance toy."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from vidgen.argtypes import (device_name, finite_float, non_negative_float, non_negative_float_or_inf, parse_seeds,
                             non_negative_int, positive_float, positive_int)
from vidgen.errors import VidgenError, output_error
from vidgen.fileio import atomic_files

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
  vidgen import edm2-img64-s-1073741-0.045.pkl --out runs/img64-s     # then the same for the XS guide
  vidgen diffusion sample --net runs/img64-s --guide runs/img64-xs --guidance 1.7 --out g.png
  vidgen diffusion sample --net runs/img512-s --guide runs/img512-xs-uncond --cfg --guidance 1.4 --out cfg.png
  vidgen diffusion sample --net runs/edm-imagenet64 --steps 256 --S-churn 40 --S-min 0.05 --S-max 50 --S-noise 1.003 --out s.png
  vidgen diffusion sample --net TEXT_RUN --prompt "a red circle and a blue square on a green background" --out t.png
  vidgen diffusion sample --net TEXT_RUN --prompt "a red circle and a blue square" \
      --region masks/right.png="red circle" --region masks/left.png="blue square" --pww-weight 1.0 --out pww.png
CFG needs an unconditional model: the net's own when it was trained with label dropout, else
a separate one given with --guide. Latent models are decoded with their VAE (encoder.vae, or --vae).
A text-conditioned net (trained with data.captions) takes --prompt; each --region IMAGE=PHRASE
paints a phrase of the prompt (white pixels of the grey-scale image, any size) and biases the
cross-attention of its tokens there, strongest at high noise (paint-with-words, eDiff-I).
"""
PHEMA_EPILOG = """examples:
  vidgen diffusion phema --snapshots runs/00001-diffusion-tiny-flowers-32x32-b32/phema --sigma-rel 0.05,0.10 --out phema-out
  vidgen diffusion phema --snapshots RUN/phema --sigma-rel 0.07 --step 4000 --out phema-out
  vidgen diffusion phema --snapshots edm2-training-run/ --sigma-rel 0.07 --out phema-out   # EDM2's own pickles
The result loads with `vidgen diffusion sample --net FILE.safetensors`.
"""
TOY_EPILOG = """examples:
  vidgen diffusion toy --out toy
  vidgen diffusion toy --out toy --guidance 2.5 --set main_iters=2000
"""


def register(subparsers) -> None:
    from vidgen.train.cli import add_train_arguments
    p = subparsers.add_parser("diffusion", help="EDM/EDM2 image diffusion: train, sample (generate), phema, toy, eval, import",
                              description="EDM/EDM2 image diffusion with CFG, autoguidance and guidance intervals.")
    sub = p.add_subparsers(dest="diffusion_command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="train an EDM2 U-Net on an image folder or prepared dataset",
                       epilog=TRAIN_EPILOG, formatter_class=fmt)
    add_train_arguments(t, with_family=False, with_init=False)
    t.add_argument("--init", metavar="CKPT", help="start from these weights (sets init): fine-tune an expert")
    t.set_defaults(func=run_train)

    s = sub.add_parser("sample", aliases=["generate"], help="sample images with Euler / Heun / stochastic samplers and guidance",
                       epilog=SAMPLE_EPILOG, formatter_class=fmt)
    s.add_argument("--net", required=True, metavar="CKPT", help="run / checkpoint folder (trained or imported) or "
                   "phema .safetensors; with --expert-boundaries, one per noise range, comma separated (low first)")
    s.add_argument("--expert-boundaries", metavar="S1,S2,..", help="sigma split points of noise-range experts")
    s.add_argument("--guide", metavar="CKPT", help="autoguidance: a weaker model with the same conditioning; "
                   "with --cfg: the unconditional model")
    s.add_argument("--cfg", action="store_true", help="classifier-free guidance: the net (or --guide) without the class")
    s.add_argument("--guidance", type=finite_float, default=1.0, help="guidance weight w (1 = none)")
    s.add_argument("--interval", metavar="LO,HI", help="guide only when sigma is in (LO, HI], e.g. 0.28,2.9")
    s.add_argument("--steps", type=positive_int, help="sampling steps (default: the run's sample.steps)")
    s.add_argument("--solver", choices=("heun", "euler"), help="default: the run's (heun)")
    s.add_argument("--churn", "--S-churn", dest="churn", type=non_negative_float,
                   help="S_churn > 0: stochastic sampler (EDM alg. 2)")
    s.add_argument("--S-min", dest="s_tmin", type=non_negative_float, help="churn only where sigma >= S_min")
    s.add_argument("--S-max", dest="s_tmax", type=non_negative_float_or_inf, help="churn only where sigma <= S_max")
    s.add_argument("--S-noise", dest="s_noise", type=positive_float, help="scale of the churn noise (e.g. 1.003)")
    s.add_argument("--dtype", choices=("float32", "float64"), help="of the trajectory (default: the run's; EDM "
                   "imports float64, EDM2 float32)")
    s.add_argument("--seeds", default="0-15", help="seed list, e.g. 0-63 or 1,5,9")
    s.add_argument("--class", dest="class_idx", type=non_negative_int,
                   help="class label (default: drawn from each seed, after its noise)")
    s.add_argument("--prompt", metavar="TEXT", help="the prompt of a text-conditioned net")
    s.add_argument("--region", action="append", default=[], metavar="IMAGE=PHRASE",
                   help="paint-with-words: where a phrase of the prompt goes (repeatable)")
    s.add_argument("--pww-weight", type=float, default=1.0, metavar="W",
                   help="strength w' of the paint-with-words bias (default 1)")
    s.add_argument("--vae", metavar="DIR", help="where the run's VAE is (default: its encoder.vae)")
    s.add_argument("--batch", type=positive_int, default=16)
    s.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda (default auto)")
    s.add_argument("--out", required=True, metavar="grid.png|DIR",
                   help="a .png grid, or a folder of PNGs (they appear together, when all are written)")
    s.add_argument("--allow-nonfinite", action="store_true", help="load nets with NaN / inf weights anyway")
    s.set_defaults(func=run_sample)

    ph = sub.add_parser("phema", help="post-hoc EMA: reconstruct any sigma_rel from power-EMA snapshots",
                        epilog=PHEMA_EPILOG, formatter_class=fmt)
    ph.add_argument("--snapshots", required=True, metavar="DIR",
                    help="the run's phema/ folder, or a folder of EDM2 network-snapshot-*.pkl")
    ph.add_argument("--sigma-rel", required=True, help="target widths, comma separated (each < 0.2887)")
    ph.add_argument("--out", required=True, metavar="DIR")
    ph.add_argument("--network", help="network name when the folder holds several")
    ph.add_argument("--step", type=non_negative_int, help="reconstruct at this step (default: the last snapshot); "
                    "for EDM2 pickles: at this many images seen")
    ph.add_argument("--from", dest="sources", help="use only snapshots of these tracked widths, e.g. 0.05,0.10")
    ph.set_defaults(func=run_phema)

    ty = sub.add_parser("toy", help="2-D toy: no guidance vs CFG vs autoguidance (PNG + JSON)",
                        epilog=TOY_EPILOG, formatter_class=fmt)
    ty.add_argument("--out", required=True, metavar="DIR")
    ty.add_argument("--guidance", type=finite_float, help="guidance weight for CFG and autoguidance")
    ty.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a ToyConfig field, e.g. main_iters=2000")
    ty.set_defaults(func=run_toy)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_train(args) -> int:
    from vidgen.diffusion.recipe import DiffusionRecipe
    from vidgen.diffusion.unet import build_denoiser
    from vidgen.nn import count_parameters
    from vidgen.train.cli import resolve_config, run_recipe
    if args.init:
        args.overrides = [*args.overrides, f"init={args.init}"]
    if args.dry_run:  # count on the meta device: no memory, no data needed, XXL in seconds
        import os

        from vidgen.config import dump_yaml
        from vidgen.train.dist import check_engine
        cfg = resolve_config(DiffusionRecipe, args)
        check_engine(cfg.engine, int(os.environ.get("WORLD_SIZE", "1")))  # what a run would refuse
        print(dump_yaml(cfg), end="")
        n = count_parameters(build_denoiser(cfg.model, sigma_data=cfg.loss.sigma_data, device="meta",
                                            precond=cfg.precond))
        print(json.dumps({"arch": cfg.model.arch, "precond": cfg.precond.kind, "preset": cfg.model.preset,
                          "parameters": n, "millions": round(n / 1e6, 3)}))
        return 0
    return run_recipe(DiffusionRecipe, args)



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
    from vidgen.data.vae import LatentCodec
    from vidgen.diffusion.generate import generate_images, sampler_config
    from vidgen.diffusion.load import load_denoiser
    from vidgen.render.layout import grid
    from vidgen.render.writer import save_png
    device = torch.device(args.device)
    if args.expert_boundaries:
        from vidgen.diffusion.experts import ExpertDenoiser
        try:
            bounds = [float(v) for v in args.expert_boundaries.split(",")]
        except ValueError:
            raise VidgenError(f"--expert-boundaries {args.expert_boundaries!r}: give sigmas like 0.5,5") from None
        loaded = [load_denoiser(p, device) for p in args.net.split(",")]
        net, cfg = ExpertDenoiser([d for d, _ in loaded], bounds), loaded[0][1]
    else:
        net, cfg = load_denoiser(args.net, device)
    guide, guide_cfg = load_denoiser(args.guide, device) if args.guide else (None, None)
    check_guidance(args, cfg, guide_cfg)
    scfg = sampler_config(cfg, steps=args.steps, solver=args.solver, churn=args.churn, s_tmin=args.s_tmin,
                          s_tmax=args.s_tmax, s_noise=args.s_noise, dtype=args.dtype, guidance=args.guidance,
                          interval=parse_interval(args.interval))
    scfg.check()
    encoder = cfg.encoder if not args.vae else dataclasses.replace(cfg.encoder, vae=args.vae)
    seeds, t0 = parse_seeds(args.seeds), time.perf_counter()
    path = Path(args.out)
    if path.suffix.lower() != ".png" and path.exists() and not path.is_dir():
        raise VidgenError(f"--out {path}: exists and is not a folder; give a .png path or a folder")
    text, paint = text_inputs(args, cfg, device)
    from tqdm import tqdm
    with tqdm(total=len(seeds), desc="sample", unit="image", disable=len(seeds) <= args.batch) as bar:
        out = generate_images(net, cfg, seeds, scfg, guide=guide, use_cfg=args.cfg, class_idx=args.class_idx,
                              batch=args.batch, device=device, codec=LatentCodec(encoder, device), progress=bar.update,
                              prompts=[args.prompt] * len(seeds) if text is not None else None, text=text,
                              paint=paint)
    settings = {"net": str(args.net), "guide": args.guide, "cfg": args.cfg, "guidance": scfg.guidance,
                "interval": scfg.interval, "steps": scfg.steps, "solver": scfg.solver, "churn": scfg.churn,
                "S_min": scfg.s_tmin, "S_max": scfg.s_tmax, "S_noise": scfg.s_noise, "dtype": scfg.dtype,
                "seeds": args.seeds, "class": args.class_idx, "nfe_per_batch": out.nfe,
                "guide_nfe_per_batch": out.guide_nfe, "prompt": args.prompt, "regions": args.region,
                "pww_weight": args.pww_weight if args.region else None}
    if cfg.encoder.kind == "vae":
        settings["vae"] = encoder.vae
    try:
        if path.suffix.lower() == ".png":
            save_png(path, grid(list(out.images)), settings)
        else:
            with atomic_files(path) as tmp:  # all images or none
                for s, img in zip(seeds, out.images):
                    save_png(tmp / f"seed{s:06d}.png", img, settings)
    except OSError as exc:
        raise output_error(exc, path, "no image was added there (what it held before is unchanged)") from None
    print(json.dumps({"out": str(path), "images": len(seeds), "nfe": out.nfe, "guide_nfe": out.guide_nfe,
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


def text_inputs(args, cfg, device):
    """(text encoder, PaintWithWords or None) for a text-conditioned net; (None, None) else."""
    if not cfg.data.captions:
        if args.prompt or args.region:
            raise VidgenError(f"--prompt / --region need a text-conditioned net; {args.net} was not trained on "
                              "captions (data.captions)")
        return None, None
    if not args.prompt:
        raise VidgenError(f"{args.net} is text-conditioned: give --prompt TEXT")
    from vidgen.diffusion.text import load_region, paint_with_words, parse_region, text_encoder
    text = text_encoder(cfg, device)
    if not args.region:
        return text, None
    regions = [(load_region(path), phrase) for path, phrase in map(parse_region, args.region)]
    paint = paint_with_words(text, args.prompt, regions, args.pww_weight)
    paint.masks = paint.masks.to(device)
    return text, paint


def check_guidance(args, cfg, guide_cfg) -> None:
    """Refuse guidance the models cannot give: CFG needs an unconditional model, the net's
    own (trained with label dropout) or a separate one (--guide); a guide must work in the
    same space as the net."""
    m = cfg.model
    if args.cfg and not m.label_dim:
        raise VidgenError(f"--cfg needs a class-conditional net; {args.net} is unconditional (use --guide for "
                          "autoguidance)")
    if args.cfg and guide_cfg is None and cfg.loss.label_dropout <= 0:
        raise VidgenError(f"--cfg: {args.net} was trained without label dropout (loss.label_dropout = 0), so it has "
                          "no unconditional mode; give its unconditional model with --guide (e.g. EDM2's "
                          "*-uncond networks), or use --guide alone for autoguidance")
    if guide_cfg is not None:
        g = guide_cfg.model
        if (g.img_channels, g.img_resolution) != (m.img_channels, m.img_resolution) or \
                guide_cfg.encoder.kind != cfg.encoder.kind:
            raise VidgenError(f"--guide {args.guide} works on {g.img_channels}x{g.img_resolution}x{g.img_resolution} "
                              f"{guide_cfg.encoder.kind} data, the net on {m.img_channels}x{m.img_resolution}x"
                              f"{m.img_resolution} {cfg.encoder.kind} data")
        if not args.cfg and g.label_dim not in (0, m.label_dim):
            raise VidgenError(f"--guide {args.guide} has {g.label_dim} classes, the net {m.label_dim}")


def run_phema(args) -> int:
    from vidgen.config import load_yaml
    from vidgen.diffusion.phema import list_pickles, reconstruct, reconstruct_pickles, write_reconstruction
    folder = Path(args.snapshots)
    if not folder.is_dir():
        raise VidgenError(f"--snapshots {folder}: not a folder; pass the run's phema/ folder")
    try:
        targets = [float(v) for v in args.sigma_rel.split(",")]
        sources = [float(v) for v in args.sources.split(",")] if args.sources else None
    except ValueError:
        raise VidgenError("--sigma-rel / --from: give numbers like 0.05,0.10") from None
    out = Path(args.out)
    if list_pickles(folder) and not any(folder.glob("*.safetensors")):  # EDM2's own snapshots
        if out.exists() and not out.is_dir():
            raise VidgenError(f"--out {out}: exists and is not a folder")
        results = reconstruct_pickles(folder, targets, args.step, sources)
        lines = []
        try:
            with atomic_files(out) as tmp:  # every reconstruction or none
                for state, info, config in results:
                    name = f"phema-{info['nimg'] // 1000:07d}-{info['sigma_rel']:.3f}.safetensors"
                    write_reconstruction(tmp / name, state, {k: v for k, v in info.items() if k != "weights"}, config)
                    lines.append(json.dumps({"out": str(out / name), **{
                        k: info[k] for k in ("nimg", "sigma_rel", "num_snapshots", "profile_error")}}))
        except OSError as exc:
            raise output_error(exc, out, "no reconstruction was added there (what it held before is unchanged)") from None
        print("\n".join(lines))
        return 0
    run_cfg = folder.parent / "config.yaml"
    config = load_yaml(run_cfg) if run_cfg.is_file() else None
    if out.exists() and not out.is_dir():
        raise VidgenError(f"--out {out}: exists and is not a folder")
    results = reconstruct(folder, targets, args.network, args.step, sources)
    lines = []
    try:
        with atomic_files(out) as tmp:  # every reconstruction or none
            for state, info in results:
                name = f"{info['network']}-phema-{info['step']:09d}-s{info['sigma_rel']:.4f}.safetensors"
                write_reconstruction(tmp / name, state, info, config)
                lines.append(json.dumps({"out": str(out / name), **{
                    k: info[k] for k in ("step", "sigma_rel", "num_snapshots", "profile_error")}}))
    except OSError as exc:
        raise output_error(exc, out, "no reconstruction was added there (what it held before is unchanged)") from None
    print("\n".join(lines))
    return 0


def run_toy(args) -> int:
    from vidgen.config import load_config
    from vidgen.diffusion.toy2d import ToyConfig, write_toy
    overrides = list(args.overrides) + ([f"guidance={args.guidance}"] if args.guidance is not None else [])
    cfg = load_config(ToyConfig, None, overrides)
    report = write_toy(cfg, Path(args.out), progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({k: report[k] for k in ("methods", "seconds")}))
    return 0
