"""`vidgen` command line: one sub-command per area, each registered by its own package.

    vidgen data prepare|inspect ...     (vidgen/data/cli.py)
    vidgen train FAMILY ...             (vidgen/train/cli.py)
    vidgen generate ...                 (vidgen/lvg/cli.py)
    vidgen eval ...                     (vidgen/metrics/cli.py)
    vidgen diffusion train|sample|phema|toy ...   (vidgen/diffusion/cli.py)
    vidgen t2i ...                      (vidgen/stylegan_t/cli.py)
    vidgen import PICKLE --out RUN_DIR  (vidgen/import_cli.py)

Each of those modules defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; returns an exit code or None).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vidgen.errors import VidgenError
from vidgen.families import load_families
from vidgen.hostmem import tune_host_allocator

# Order is the order of `vidgen --help`.
_COMMAND_MODULES = (
    "vidgen.data.cli",
    "vidgen.train.cli",
    "vidgen.lvg.cli",
    "vidgen.metrics.cli",
    "vidgen.diffusion.cli",
    "vidgen.stylegan_t.cli",
    "vidgen.import_cli",
)


def build_parser(modules=_COMMAND_MODULES, prog: str = "vidgen") -> argparse.ArgumentParser:
    load_families()  # each family registers itself (vidgen/registry.py)
    parser = argparse.ArgumentParser(
        prog=prog,
        description="vidgen: train, render and evaluate video generators.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vidgen COMMAND --help` for the options and examples of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not installed in this build
                continue
            raise
        module.register(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        tune_host_allocator()  # large CPU tensors reuse heap pages (vidgen/hostmem.py)
        code = args.func(args)
    except VidgenError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
