"""`vidgen eval`: benchmark metrics of a checkpoint or of a folder of rendered videos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vidgen.argtypes import device_name, positive_int
from vidgen.errors import VidgenError, output_error
from vidgen.fileio import atomic_files

EPILOG = """\
examples:
  # FVD (two protocols) and frame FID of a checkpoint against a prepared dataset
  # (`vidgen data prepare ... --out data/mtb`), read at 144x256
  vidgen eval --real data/mtb --resolution 144x256 \\
      --fake runs/00003-lvg/ckpt-000500.safetensors \\
      --metrics fvd2048_16f,fvd2048_128f,fid50k_full --out eval/mtb-500

  # the benchmark's default protocols, three runs (mean +- std), rendered videos as input
  vidgen eval --benchmark mtb --real data/mtb --fake renders/ --runs 3 --out eval/r

  # detector files kept elsewhere, real statistics recomputed
  vidgen eval --real data/sky --fake renders/ --metrics fvd2048_16f --out eval/s \\
      --detector-dir /models/vidgen --no-cache
  vidgen eval ... --detector i3d=/models/i3d_torchscript.pt

Detector files (verified by SHA-256) are looked up in --detector / --detector-dir, then in
$VIDGEN_CACHE/detectors (default ~/.cache/vidgen/detectors); see docs/METRICS.md.
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
                       progress=not args.quiet)
    parse_metrics(metrics, policy)  # fail on a bad name before reading any data
    real = load_real(args.real, args.resolution)
    fake = load_fake(args.fake)
    report = evaluate(real, fake, opts)
    if bench is not None:
        report["benchmark"] = bench.summary()
    for e in report["metrics"].values():
        print(f"{e['name']:28s} {e['value']:.4f} +- {e['std']:.4f}  ({e['runs']} run(s))")
    out = Path(args.out)
    try:
        with atomic_files(out) as tmp:  # report.json, report.md and plots appear together
            files = {k: str(out / Path(v).name) for k, v in write_report(report, tmp).items()}
    except OSError as exc:
        raise output_error(exc, out, "the metrics are "
                          "printed above and nothing was added to that folder") from None
    print(json.dumps({"report": files["json"], "table": files["md"]}))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="FVD / FID / FD-DINOv2 / KID / precision-recall / colour change",
        description="Evaluate generated videos against a real dataset under named protocols; "
                    "writes report.json, report.md and colour-change plots into --out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True,
                   help="prepared dataset folder (manifest.json, from `vidgen data prepare`) or a "
                        "folder of videos, frame folders or frame zips")
    p.add_argument("--resolution", metavar="HxW",
                   help="resolution of the real data to read: a prepared one (default: the largest "
                        "prepared), or for a raw folder a centre crop + resize (default: native)")
    p.add_argument("--fake", required=True,
                   help="checkpoint file, folder of rendered videos, or module:function generator")
    p.add_argument("--metrics", default="",
                   help="comma-separated: fvd2048_16f,fvd2048_128f,fvd2048_128f_subsample8f,"
                        "fid50k_full,fd_dinov2,kid,pr,colour_change")
    p.add_argument("--out", required=True, help="output folder for report.json / report.md / plots")
    p.add_argument("--benchmark", metavar="NAME",
                   help="benchmark definition, datasets/NAME.yaml or a YAML path (default protocols, policy)")
    p.add_argument("--runs", type=positive_int, default=1, help="repeat with new seeds; report mean +- std")
    p.add_argument("--seed", type=int, default=0, help="base seed of real sampling and generation")
    p.add_argument("--real-policy", choices=("per_video", "uniform"),
                   help="real clip sampling (default: the benchmark's, else per_video)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached real statistics")
    p.add_argument("--detector-dir", help="folder holding the detector weight files")
    p.add_argument("--detector", action="append", metavar="NAME=PATH",
                   help="weight file of one detector (inception, i3d, dinov2, clip); repeatable")
    p.add_argument("--device", type=device_name, default="cpu", help="torch device: cpu (default), cuda or auto")
    p.add_argument("--clip-batch", type=positive_int, default=8, help="clips per detector call")
    p.add_argument("--frame-batch", type=positive_int, default=64, help="frames per detector call")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="evaluate a checkpoint with NaN / inf weights instead of refusing it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval)
