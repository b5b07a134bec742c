"""`vidgen train FAMILY`: train any model family through the one engine."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any

import torch

from vidgen.config import dump_yaml, load_config
from vidgen.nn import count_parameters
from vidgen.errors import ConfigError
from vidgen import registry
from vidgen.registry import recipe_class
from vidgen.train.dist import check_engine

EPILOG = """examples:
  vidgen train toygan --config configs/toygan-tiny.yaml --data synthetic
  vidgen train toygan --config configs/toygan-tiny.yaml --data synthetic --set engine.steps=50 --dry-run
  vidgen train lvg-lowres --config configs/lvg/lowres-tiny.yaml --data data/drive --resume auto
  torchrun --nproc_per_node 2 -m vidgen train toygan --config configs/toygan-tiny.yaml --data synthetic

  # fine-tune an imported published checkpoint (vidgen import) or any run on new data
  vidgen train lvg-lowres --init runs/imported-lres --data data/mine --set engine.steps=5000

--set takes dotted keys of the config (see --dry-run for all of them); values are YAML,
e.g. --set engine.batch=16 --set ema.sigma_rels=[0.05,0.1].
"""


PHEMA_EPILOG = """examples:
  vidgen train sg3 --config configs/sg3/tiny.yaml --data synthetic --set ema.kind=power --set ema.snapshot_every=50
  vidgen phema --run runs/00000-sg3-t-synthetic-16x16-b16 --sigma-rel 0.08 --out runs/sg3-phema-0.08
  vidgen sg3 generate --run runs/sg3-phema-0.08 --seeds 0-15 --out grid.png
  vidgen phema --run RUN --sigma-rel 0.05,0.10,0.15 --step 4000 --out phema-sweep   # phema-sweep/s0.0500, ...

Each output is a run folder: RUN's config and newest checkpoint with the EMA network
({network}_ema) replaced by the reconstruction; state.json records it under "phema".
`vidgen diffusion phema` (single .safetensors files, EDM2's pickles) is unchanged.
"""


def _trainable() -> list[str]:
    return [f.name for f in registry.families() if f.recipe]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help=f"train a model family ({', '.join(_trainable())})",
        description="Train a model family with the shared engine: checkpoints, exact resume, "
                    "DDP under torchrun, EMA, logging.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(p, with_family=True)
    p.set_defaults(func=run_train)
    ph = subparsers.add_parser(
        "phema", help="post-hoc EMA of any family's run: any EMA width as a run folder its commands take",
        description="Reconstruct power-function EMA profiles (EDM2's post-hoc EMA) from the snapshots a run "
                    "trained with ema.kind=power wrote to RUN/phema/, and write each as a run folder whose EMA "
                    "network is the reconstruction (generate, render and eval read it like any run).",
        epilog=PHEMA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ph.add_argument("--run", required=True, metavar="RUN", help="the run folder (its newest checkpoint and phema/)")
    ph.add_argument("--sigma-rel", required=True, metavar="S[,S...]",
                    help="EMA widths to reconstruct, relative to the training time (< 0.2887), e.g. 0.05,0.10")
    ph.add_argument("--step", type=int, default=None, help="reconstruct at this step (default: the last snapshot)")
    ph.add_argument("--network", default=None, help="which network's snapshots when there are several (e.g. G)")
    ph.add_argument("--out", required=True, metavar="DIR",
                    help="new run folder (one width) or a folder of s<width> run folders (several)")
    ph.set_defaults(func=run_phema)


def add_train_arguments(p: argparse.ArgumentParser, with_family: bool, with_init: bool = True,
                        families: list[str] | None = None) -> None:
    """The options shared by every `... train` command (also used by `timelapse train`);
    ``with_init=False`` for a command that defines its own ``--init``; ``families`` limits the
    FAMILY argument (`vidgen lvg train lvg-lowres ...`)."""
    if with_family:
        names = families or _trainable()
        p.add_argument("family", choices=names, metavar="FAMILY", help=f"model family: {', '.join(names)}")
    p.add_argument("--config", metavar="FILE", help="YAML preset (e.g. configs/toygan-tiny.yaml)")
    p.add_argument("--data", metavar="DIR", help="dataset folder (sets data.path); 'synthetic' where supported")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. engine.steps=1000 (repeatable)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="'auto': continue the newest run of this recipe under --out if any; "
                        "PATH: a run folder or checkpoint folder (without --config its config is the base)")
    if with_init:
        p.add_argument("--init", dest="init_from", metavar="PATH",
                       help="start a new run from the networks (and compatible optimiser moments) of a run or "
                            "checkpoint folder, e.g. one made by `vidgen import`; without --config its config "
                            "is the base")
    p.add_argument("--out", metavar="DIR", help="folder for run folders (sets engine.out_dir)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config and parameter counts, then exit")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="read a checkpoint (--resume, --init) with NaN / inf weights instead of refusing it")


def resolve_config(recipe_cls: type, args: argparse.Namespace) -> Any:
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.out is not None:
        overrides.append(f"engine.out_dir={args.out}")
    base = None
    init = getattr(args, "init_from", None)
    resume = args.resume if args.resume not in (None, "", "auto", "none") else None
    source, flag = (init, "--init") if init else (resume, "--resume")
    if source and args.config is None:  # the config the networks were built with
        from vidgen.config import config_from_dict
        from vidgen.train.checkpoint import read_checkpoint

        with warnings.catch_warnings():  # a skipped bad checkpoint is reported once, when the run opens it
            warnings.simplefilter("ignore")
            c = read_checkpoint(source)
        if c.family != recipe_cls.family:
            raise ConfigError(f"{flag} {source}: a {c.family!r} checkpoint cannot start a {recipe_cls.family!r} run")
        base = config_from_dict(recipe_cls.config_class, c.config)
    return load_config(recipe_cls.config_class, args.config, overrides, base=base)


def parameter_counts(recipe_cls: type, cfg: Any, children: bool = False) -> dict[str, int]:
    """Parameters per network; with ``children``, also per direct sub-module as ``"G.mapping"``
    and, for a network with frozen parts (a pretrained text encoder or feature network), the
    parameters that train as ``"G:trainable"``. A recipe with ``count_on_meta = True`` is built
    on the meta device (no memory, no weight files read: paper-size networks with frozen
    pretrained parts)."""
    recipe = recipe_cls(cfg, torch.device("meta" if getattr(recipe_cls, "count_on_meta", False) else "cpu"))
    counts = {}
    for name, net in recipe.networks().items():
        counts[name] = count_parameters(net)
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        if children and trainable != counts[name]:
            counts[f"{name}:trainable"] = trainable
        if children:
            for child, module in net.named_children():
                n = count_parameters(module)
                if n:
                    counts[f"{name}.{child}"] = n
    return counts


def dry_run(recipe_cls: type, cfg: Any, out=None) -> None:
    out = out or sys.stdout
    print(f"# {recipe_cls.family}: resolved config", file=out)
    print(dump_yaml(cfg), end="", file=out)
    counts = parameter_counts(recipe_cls, cfg, children=True)
    print("# parameters (networks, then their direct sub-modules)", file=out)
    nets = [k for k in counts if "." not in k and ":" not in k]
    for name in nets:
        print(f"{name:>12s}  {counts[name]:>14,d}  ({counts[name] / 1e6:.3f}M)", file=out)
    print(f"{'total':>12s}  {sum(counts[k] for k in nets):>14,d}", file=out)
    for name, n in counts.items():
        if "." in name:
            print(f"  {name:<28s}  {n:>14,d}  ({n / 1e6:.3f}M)", file=out)
    trainable = {k.split(":")[0]: n for k, n in counts.items() if k.endswith(":trainable")}
    if trainable:
        print("# trainable parameters (without the frozen parts)", file=out)
        for name, n in trainable.items():
            print(f"{'trainable ' + name:>20s}  {n:>14,d}  ({n / 1e6:.3f}M)", file=out)


def run_recipe(recipe_cls: type, args: argparse.Namespace) -> int:
    """Resolve the config, then dry-run or train; shared with the other `train` commands."""
    if not hasattr(recipe_cls.config_class, "__dataclass_fields__"):
        raise ConfigError(f"recipe {recipe_cls.__name__} has no dataclass config_class")
    cfg = resolve_config(recipe_cls, args)
    check_engine(cfg.engine, int(os.environ.get("WORLD_SIZE", "1")))  # what a run would refuse
    if args.dry_run:
        dry_run(recipe_cls, cfg)
        return 0
    from vidgen.train.engine import train

    run_dir = train(recipe_cls, cfg, resume=args.resume, init=getattr(args, "init_from", None))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}")
    return 0


def run_phema(args: argparse.Namespace) -> int:
    import json

    from vidgen.errors import VidgenError
    from vidgen.train.phema import write_phema_run

    try:
        targets = [float(v) for v in args.sigma_rel.split(",")]
    except ValueError:
        raise VidgenError(f"--sigma-rel {args.sigma_rel!r}: give numbers like 0.05,0.10") from None
    for folder, info in write_phema_run(args.run, targets, args.out, args.step, args.network):
        print(json.dumps({"run": str(folder), **{k: info[k] for k in ("network", "step", "sigma_rel",
                                                                    "num_snapshots", "profile_error")}}))
    return 0


def run_train(args: argparse.Namespace) -> int:
    return run_recipe(recipe_class(args.family), args)
