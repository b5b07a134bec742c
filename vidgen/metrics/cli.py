"""`vidgen eval`: benchmark metrics of a checkpoint or of a folder of rendered videos."""

from __future__ import annotations

import argparse
import json
import sys

from vidgen.errors import VidgenError

EPILOG = """\
examples:
  # FVD (two protocols) and frame FID of a low-res run against a prepared dataset
  # (`vidgen data prepare ... --out data/mtb`), read at 36x64
  vidgen eval --real data/mtb --resolution 36x64 \\
      --fake runs/00003-lvg-lowres-mtb-36x64-b64 \\
      --metrics fvd2048_16f,fvd2048_128f,fid50k_full --out eval/mtb-lowres

  # the benchmark's default protocols, three runs (mean +- std), rendered videos as input
  vidgen eval --benchmark mtb --real data/mtb --fake renders/ --runs 3 --out eval/r

  # detector files kept elsewhere, real statistics recomputed
  vidgen eval --real data/sky --fake renders/ --metrics fvd2048_16f --out eval/s \\
      --detector-dir /models/vidgen --no-cache
  vidgen eval ... --detector i3d=/models/i3d_torchscript.pt

  # any family's checkpoint: its sampler gives video frames or images (read from state.json)
  vidgen eval --real frames/ --fake runs/00002-timelapse-cam-256x256-b32 --metrics fid10k_full --out eval/t

  # a diffusion run sampled with other settings than its config's (EDM's ImageNet-64 sampler)
  vidgen eval --real data/imagenet64 --fake runs/edm-imagenet64 --metrics fid50k_full --covariance unbiased \
      --fake-set sample.steps=256 --fake-set sample.churn=40 --fake-set sample.s_tmin=0.05 \
      --fake-set sample.s_tmax=50 --fake-set sample.s_noise=1.003 --device cuda --out eval/edm-in64

  # the ImageNet-classes study: class-matched FID and heatmaps of where FID looks
  vidgen eval --real data/mtb --fake runs/00003-lvg --metrics fid50k_full,fid_class_matched \
      --fid-heatmaps 16 --out eval/classes

Detector files (verified by SHA-256) are looked up in --detector / --detector-dir, then in
$VIDGEN_CACHE/detectors (default ~/.cache/vidgen/detectors); see docs/METRICS.md.
FD-DINOv2 and CLIP-FD are added beside every FID when their files are present (report notes
say when they are not).
`--detector NAME=random:DIM` swaps in a small random network to check the plumbing only:
its numbers are not comparable to anything.
"""


def _detector_overrides(items: list[str]) -> tuple[dict, dict]:
    paths, built = {}, {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise VidgenError(f"--detector {item!r}: expected NAME=PATH, e.g. i3d=/models/i3d_torchscript.pt")
        if value.startswith("random:"):
            from vidgen.metrics.detectors import RandomDetector

            try:
                dim = int(value.split(":", 1)[1])
            except ValueError as exc:
                raise VidgenError(f"--detector {item!r}: random:DIM needs an integer DIM") from exc
            built[name] = RandomDetector(dim, temporal=(name == "i3d"))
        else:
            paths[name] = value
    return paths, built


def run_eval(args: argparse.Namespace) -> int:
    from vidgen.metrics.evaluate import EvalOptions, benchmark_metrics, evaluate, parse_metrics
    from vidgen.metrics.inputs import load_fake, load_real
    from vidgen.metrics.report import write_report

    bench = None
    if args.benchmark:
        from vidgen.data.benchmarks import load_benchmark

        bench = load_benchmark(args.benchmark)
    metrics = [m.strip() for m in (args.metrics or "").split(",") if m.strip()]
    if not metrics:
        if bench is None:
            raise VidgenError("--metrics is empty: name at least one metric or pass --benchmark NAME")
        metrics = benchmark_metrics(bench)
    policy = args.real_policy or (bench.real_policy if bench else "per_video")
    paths, built = _detector_overrides(args.detector or [])
    opts = EvalOptions(metrics=metrics, runs=args.runs, seed=args.seed, real_policy=policy,
                       clip_batch=args.clip_batch, frame_batch=args.frame_batch,
                       use_cache=not args.no_cache, device=args.device, detectors=built,
                       detector_paths=paths, detector_dir=args.detector_dir,
                       progress=not args.quiet, covariance=args.covariance,
                       fid_heatmaps=args.fid_heatmaps, companions=not args.no_companions)
    parse_metrics(metrics, policy)  # fail on a bad name before reading any data
    if args.fid_heatmaps < 0:
        raise VidgenError(f"--fid-heatmaps {args.fid_heatmaps}: give a number of images >= 0")
    real = load_real(args.real, args.resolution)
    from vidgen.families import load_families

    load_families()  # checkpoints name their family; each family package registers its sampler
    fake = load_fake(args.fake, args.device, args.fake_set or [])
    report = evaluate(real, fake, opts)
    if bench is not None:
        report["benchmark"] = bench.summary()
    files = write_report(report, args.out)
    for e in report["metrics"].values():
        print(f"{e['name']:28s} {e['value']:.4f} +- {e['std']:.4f}  ({e['runs']} run(s))")
        if "verdict" in e:
            before = sum(e["fid_before"]) / len(e["fid_before"])
            print(f"{'':28s} FID {before:.4f} before class matching: {e['verdict']}")
    for note in report.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps({"report": files["json"], "table": files["md"]}))
    return 0


HELP = "FVD / FID / FD-DINOv2 / KID / precision-recall / colour change"
DESCRIPTION = ("Evaluate generated videos or images (any family's checkpoint, or folders) against real data "
               "under named protocols; writes report.json, report.md, colour-change plots and FID heatmaps "
               "into --out.")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(p)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `vidgen eval` (also `vidgen FAMILY eval`); sets ``func``."""
    p.add_argument("--real", required=True,
                   help="prepared dataset folder (manifest.json, from `vidgen data prepare`), a "
                        "folder of videos, frame folders or frame zips, or a folder of images")
    p.add_argument("--resolution", metavar="HxW",
                   help="resolution of the real data to read: a prepared one (default: the largest "
                        "prepared), or for a raw folder a centre crop + resize (default: native)")
    p.add_argument("--fake", required=True,
                   help="a run folder or checkpoint of any family (its sampler: video frames or images), "
                        "a folder of rendered videos, a folder of images, or module:function generator")
    p.add_argument("--fake-set", action="append", metavar="KEY=VALUE",
                   help="override a setting of the --fake checkpoint's config before sampling, e.g. "
                        "sample.steps=18 (diffusion); repeatable; recorded in the report")
    p.add_argument("--metrics", default="",
                   help="comma-separated: fvd2048_16f,fvd2048_128f,fvd2048_128f_subsample8f,"
                        "fid50k_full,fd_dinov2,clip_fd,kid,pr,fid_class_matched,colour_change")
    p.add_argument("--fid-heatmaps", type=int, default=0, metavar="N",
                   help="save Grad-CAM heatmaps of FID for the N generated frames that move it most "
                        "(fid_heatmaps.png, linked from report.md)")
    p.add_argument("--no-companions", action="store_true",
                   help="do not add FD-DINOv2 / CLIP-FD beside FID (by default they are computed "
                        "whenever their detector files are present, and noted as skipped otherwise)")
    p.add_argument("--out", required=True, help="output folder for report.json / report.md / plots")
    p.add_argument("--benchmark", metavar="NAME",
                   help="benchmark definition, datasets/NAME.yaml or a YAML path (default protocols, policy)")
    p.add_argument("--runs", type=int, default=1, help="repeat with new seeds; report mean +- std")
    p.add_argument("--seed", type=int, default=0, help="base seed of real sampling and generation")
    p.add_argument("--real-policy", choices=("per_video", "uniform"),
                   help="real clip sampling (default: the benchmark's, else per_video)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached real statistics")
    p.add_argument("--detector-dir", help="folder holding the detector weight files")
    p.add_argument("--detector", action="append", metavar="NAME=PATH",
                   help="weight file of one detector (inception, i3d, dinov2, clip); repeatable")
    p.add_argument("--covariance", choices=("ml", "unbiased"), default="ml",
                   help="covariance of the Frechet distances: ml = 1/n (StyleGAN3, StyleGAN-V and "
                        "long-video-GAN metric code, default), unbiased = 1/(n-1) (TTUR, pytorch-fid, "
                        "torch-fidelity, EDM, EDM2)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--clip-batch", type=int, default=8, help="clips per detector call")
    p.add_argument("--frame-batch", type=int, default=64, help="frames per detector call")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)
