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


HELP = "convert a published checkpoint (pickle) into a vidgen run folder"


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help=HELP, description=__doc__, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_import_arguments(p)


def add_import_arguments(p: argparse.ArgumentParser, families: list[str] | None = None) -> None:
    """The options of `vidgen import`; ``families`` limits --family (`vidgen FAMILY import`)."""
    names = [f for f in _importable() if families is None or f in families]
    p.add_argument("pickle", metavar="PICKLE", help="published checkpoint (.pkl)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="new run folder to write (must not exist)")
    one = families is not None and len(names) == 1  # `vidgen FAMILY import`: that family
    p.add_argument("--family", default=names[0] if one else "auto", choices=["auto"] + names,
                   metavar="FAMILY",
                   help=f"auto (the family that recognises the file) or one of: {', '.join(names)}")
    p.set_defaults(func=run_import, import_families=names)


def run_import(args: argparse.Namespace) -> int:
    from vidgen.train.published import load_and_convert, write_run

    run = load_and_convert(args.pickle, args.family, getattr(args, "import_families", None))
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
