"""`vidgen` command line: one sub-command per area, each registered by its own package.

    vidgen data prepare|inspect ...     (vidgen/data/cli.py)
    vidgen train FAMILY ...             (vidgen/train/cli.py)
    vidgen generate ...                 (vidgen/lvg/cli.py)
    vidgen eval ...                     (vidgen/metrics/cli.py)
    vidgen diffusion train|sample|phema|toy ...   (vidgen/diffusion/cli.py)
    vidgen sg3 generate ...             (vidgen/sg3/cli.py)
    vidgen timelapse train|render|invert|eval|inspect (timelapse/cli.py; also the `timelapse` script)
    vidgen t2i ... / vidgen stylegan-t generate|train|eval|import   (vidgen/stylegan_t/cli.py)
    vidgen import PICKLE --out RUN_DIR  (vidgen/import_cli.py)

Each of those modules defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; returns an exit code or None).

Every model family also has one command group with the same verbs (:func:`add_family_verbs`):
``vidgen GROUP train | eval | import`` beside the group's own ones (``generate``, ``render``,
``sample``, ...); the group is the family's ``group`` in vidgen/registry.py, e.g. ``vidgen lvg
train lvg-lowres ...``, ``vidgen sg3 import FILE --out RUN``, ``vidgen timelapse eval``.

What a user sees when something is wrong is one line on stderr and exit status 2: a bad
argument (``PROG: error: ...``), a :class:`VidgenError` raised anywhere below, or an I/O error
of the environment (disk full, read-only or forbidden path), named with its path. Warnings are
one line too (``PROG: warning: ...``), without Python source lines. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings

from vidgen.errors import VidgenError, describe_os_error, one_line
from vidgen.families import load_families
from vidgen.hostmem import tune_host_allocator
from vidgen.train.sidecar import allow_nonfinite

# Order is the order of `vidgen --help`.
_COMMAND_MODULES = (
    "vidgen.data.cli",
    "vidgen.train.cli",
    "vidgen.lvg.cli",
    "vidgen.metrics.cli",
    "vidgen.diffusion.cli",
    "vidgen.sg3.cli",
    "timelapse.cli",
    "vidgen.stylegan_t.cli",
    "vidgen.import_cli",
)

# OSErrors caused by the machine or the user's paths, not by vidgen: reported in one line.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
    errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.ENOTEMPTY, errno.ELOOP, errno.EIO,
    errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EXDEV, errno.ETXTBSY,
})


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``PROG: error: MESSAGE (see PROG --help)``, status 2.
    Sub-command parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def error_message(exc: VidgenError) -> str:
    """The one line of a user error. An error re-raised from a DataLoader worker carries the
    worker's traceback in its text; its last line holds the message."""
    text = str(exc)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return one_line(text)


def install_one_line_warnings(prog: str) -> None:
    """Print every warning as ``PROG: warning: MESSAGE``, without the source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        out = file if file is not None else sys.stderr
        try:
            out.write(f"{prog}: warning: {one_line(message)}\n")
        except OSError:  # stderr is gone; nothing to tell
            pass
    warnings.showwarning = show


def _end_progress_bars() -> None:
    """Close the progress bars a failed command left open, so its error starts a line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # a bar half torn down already
            pass


def build_parser(modules=_COMMAND_MODULES, prog: str = "vidgen") -> argparse.ArgumentParser:
    load_families()  # each family registers itself (vidgen/registry.py)
    parser = Parser(
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
    add_family_verbs(sub)
    return parser


def _verbs(parser: argparse.ArgumentParser):
    """The sub-command action of ``parser`` (None if it has none)."""
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def add_family_verbs(sub) -> None:
    """Give every family group `train`, `eval` and `import` where its own command module did
    not define them, with the options of `vidgen train`, `vidgen eval` and `vidgen import`."""
    from vidgen import registry
    from vidgen.import_cli import HELP as IMPORT_HELP, add_import_arguments
    from vidgen.metrics.cli import DESCRIPTION as EVAL_DESCRIPTION, HELP as EVAL_HELP, add_eval_arguments
    from vidgen.train.cli import add_train_arguments, run_train

    groups: dict[str, list] = {}
    for family in registry.families():
        if family.group:
            groups.setdefault(family.group, []).append(family)
    for group, fams in groups.items():
        parent = sub.choices.get(group)
        if parent is None:
            summary = fams[0].summary or group
            parent = sub.add_parser(group, help=f"{summary}: train, eval, import",
                                    description=f"{summary}.")
            parent.set_defaults(func=lambda args, p=parent: p.print_help() or 2)
        verbs = _verbs(parent) or parent.add_subparsers(dest=f"{group}_command", metavar="COMMAND")
        trainable = [f.name for f in fams if f.recipe]
        if trainable and "train" not in verbs.choices:
            p = verbs.add_parser("train", help=f"train {', '.join(trainable)} (as `vidgen train`)",
                                 description="Train with the shared engine (see `vidgen train --help`).")
            add_train_arguments(p, with_family=len(trainable) > 1, families=trainable)
            p.set_defaults(func=run_train, **({"family": trainable[0]} if len(trainable) == 1 else {}))
        if "eval" not in verbs.choices:
            p = verbs.add_parser("eval", help=EVAL_HELP, description=EVAL_DESCRIPTION)
            add_eval_arguments(p)
        importable = [f.name for f in fams if f.importer]
        if importable and "import" not in verbs.choices:
            p = verbs.add_parser("import", help=IMPORT_HELP, description=IMPORT_HELP)
            add_import_arguments(p, importable)


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    install_one_line_warnings(parser.prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already printed on one line (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        tune_host_allocator()  # large CPU tensors reuse heap pages (vidgen/hostmem.py)
        with allow_nonfinite(bool(getattr(args, "allow_nonfinite", False))):  # checkpoints' NaN weights
            code = args.func(args)
    except VidgenError as exc:
        _end_progress_bars()
        print(f"{parser.prog}: error: {error_message(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        _end_progress_bars()
        print(f"{parser.prog}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
