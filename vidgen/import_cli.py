"""`vidgen import`: a published checkpoint (pickle) -> a vidgen run folder, without running
any code from the file (vidgen/safe_pickle.py, vidgen/train/published.py, docs/IMPORT.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidgen import registry

EPILOG = """examples:
  # the long-video GAN's low-res generator, then a video from it
  vidgen import ckpt-000000-G-ema.pkl --out runs/lres-imported
  vidgen generate --lowres runs/lres-imported --frames 300 --out video.mp4

  # a training checkpoint (G, D, optimiser states): continue training it, or fine-tune it
  vidgen import ckpt-000000-train.pkl --out runs/lres-train --family lvg-lowres
  vidgen train lvg-lowres --resume runs/lres-train --data data/mine
  vidgen train lvg-lowres --init runs/lres-train --data data/mine --set engine.steps=5000

The file is read by a loader that resolves only tensor, array and plain-data globals and
reads network objects as records (class name, constructor arguments, tensors); a pickle that
names anything else (os.system, eval, a code object) is refused and nothing in it runs.
"""


def _importable() -> list[str]:
    return [f.name for f in registry.families() if f.importer]


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help="convert a published checkpoint (pickle) into a vidgen run folder",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pickle", metavar="PICKLE", help="published checkpoint (.pkl)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="new run folder to write (must not exist)")
    p.add_argument("--family", default="auto", choices=["auto"] + _importable(), metavar="FAMILY",
                   help=f"auto (default: the family that recognises the file) or one of: {', '.join(_importable())}")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from vidgen.train.published import load_and_convert, write_run

    run = load_and_convert(args.pickle, args.family)
    written = write_run(run, Path(args.out), Path(args.pickle))
    print(f"family:      {run.family}")
    if run.resolution:
        print(f"resolution:  {run.resolution}")
    print(f"step:        {run.step} ({run.nimg} images seen)")
    for name, n in written.parameters.items():
        print(f"parameters:  {name:<8s} {n:>14,d}")
    for line in written.report:
        print(f"  - {line}")
    print(f"wrote {written.run_dir} (checkpoint {written.checkpoint.name}; "
          f"{'resumable with --resume' if written.resumable else 'use it with --init, generate and eval'})")
    return 0
