"""Published checkpoints -> vidgen run folders (``vidgen import``, docs/IMPORT.md).

A family that can import published checkpoints registers an *importer* (``Family.importer``
in vidgen/registry.py): an object with

    allow_stubs: tuple[str, ...]              # extra globals read as inert records (optional)
    detect(tree) -> bool                      # is this pickle one of mine?
    convert(tree, source: Path) -> ImportedRun

where ``tree`` is what :func:`vidgen.safe_pickle.load` read from the file. The importer maps
the reference architecture (constructor arguments and tensor shapes) onto the family's typed
config and the reference tensors onto the family's state-dict names; :func:`write_run` checks
the result against networks built from that config (every key, every shape) and writes an
ordinary run folder::

    RUN_DIR/config.yaml
    RUN_DIR/import.json                   source file, its SHA-256, the report
    RUN_DIR/checkpoints/step-XXXXXXXXX/   the engine's checkpoint format (checkpoint.py)

Optimiser states are given per parameter *name* (``"G.mapping.fc0.weight"``: network name,
dot, parameter name) and placed at the indices of the optimiser the recipe builds. EMA copies
the file lacks start as copies of their network (what training starts from anyway), so a file
with every trained network and its optimiser states gives a run that ``--resume`` continues;
any other run is a starting point for ``vidgen train FAMILY --init RUN``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import torch
from torch import nn

from vidgen import registry
from vidgen.nn import count_parameters
from vidgen.config import config_from_dict, config_to_dict, dump_yaml
from vidgen.errors import ConfigError, VidgenError
from vidgen.fileio import atomic_dir, sha256_file
from vidgen.train import checkpoint as ckpt
from vidgen.train.ema import make_ema
from vidgen.train.optim import build_optimizer


class UnsupportedCheckpoint(VidgenError):
    """A published checkpoint that cannot be converted (unknown classes or arguments, ...)."""


@dataclass
class ImportedRun:
    """What an importer made of a published checkpoint."""

    family: str  # a registered family name
    config: dict[str, Any]  # nested dict for the family's config class (partial: defaults fill the rest)
    networks: dict[str, dict[str, torch.Tensor]]  # "G", "D", "G_ema" -> vidgen state dict
    # optimiser name (as in Recipe.optimizers()) -> {"state": {"G.param.name": {"step": .., "exp_avg": ..}}}
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipe_state: dict[str, Any] = field(default_factory=dict)  # Recipe.load_state_dict input (e.g. ADA p)
    step: int = 0
    nimg: int = 0
    resolution: str = ""  # e.g. "36x64" (printed)
    report: list[str] = field(default_factory=list)  # what was found, what was left out and why


class Importer(Protocol):
    allow_stubs: tuple[str, ...]

    def detect(self, tree: Any) -> bool: ...

    def convert(self, tree: Any, source: Path) -> ImportedRun: ...


class Problems:
    """Collects what a converter cannot map, to raise them together in one message."""

    def __init__(self, source: str | os.PathLike):
        self.source, self.items = str(source), []

    def add(self, text: str) -> None:
        self.items.append(text)

    def unknown_kwargs(self, where: str, kwargs: dict, known: Iterable[str]) -> None:
        extra = sorted(set(kwargs) - set(known))
        if extra:
            self.add(f"{where}: unknown constructor arguments {', '.join(extra)}")

    def unknown_classes(self, where: str, found: Iterable[str], known: Iterable[str]) -> None:
        extra = sorted(set(found) - set(known))
        if extra:
            self.add(f"{where}: unknown classes {', '.join(extra)}")

    def raise_if_any(self) -> None:
        if self.items:
            raise UnsupportedCheckpoint(f"{self.source}: cannot convert: " + "; ".join(self.items))


# --- choosing an importer --------------------------------------------------------------------
def importers(family: str = "auto", among: Sequence[str] | None = None) -> dict[str, Importer]:
    """Family name -> importer object, of every registered family that has one (or of ``family``;
    with ``among``, "auto" considers only those families)."""
    fams = [f for f in registry.families() if among is None or f.name in among] if family == "auto" \
        else [registry.get(family)]
    out = {}
    for f in fams:
        if f.importer:
            out[f.name] = registry.resolve(f.importer, f"family {f.name!r}")
        elif family != "auto":
            raise ConfigError(f"model family {family!r} cannot import published checkpoints")
    return out


def load_and_convert(path: str | os.PathLike, family: str = "auto",
                     among: Sequence[str] | None = None) -> ImportedRun:
    """Read ``path`` without running code from it, pick the importer and convert."""
    from vidgen import safe_pickle

    path = Path(path)
    found = importers(family, among)
    stubs = tuple(sorted({s for imp in found.values() for s in getattr(imp, "allow_stubs", ())}))
    tree = safe_pickle.load(path, allow_stubs=stubs)  # refuses unsafe files before anything else
    if not found:
        raise UnsupportedCheckpoint(f"{path}: no model family recognises this pickle (it holds {_describe(tree)}); "
                                    "no importers are installed")
    matches = [name for name, imp in found.items() if imp.detect(tree)]
    if family != "auto" and not matches:
        raise UnsupportedCheckpoint(f"{path} is not a {family} checkpoint (it holds {_describe(tree)})")
    if not matches:
        raise UnsupportedCheckpoint(f"{path}: no model family recognises this pickle (it holds {_describe(tree)}); "
                           f"importers: {', '.join(found)}")
    if len(matches) > 1:
        raise UnsupportedCheckpoint(f"{path} is recognised by several families ({', '.join(matches)}); pass --family")
    run = found[matches[0]].convert(tree, path)
    if run.family not in registry.names():
        raise UnsupportedCheckpoint(f"{path}: the importer produced family {run.family!r}, which is not registered")
    return run


def _describe(tree: Any) -> str:
    from vidgen import safe_pickle

    classes = safe_pickle.summary(tree)
    top = f"top-level keys {', '.join(map(str, list(tree)[:8]))}; " if isinstance(tree, dict) else ""
    if not classes:
        return top + f"a {type(tree).__name__} and no network objects"
    names = ", ".join(sorted(classes)[:12]) + (", ..." if len(classes) > 12 else "")
    return top + f"objects of classes {names}"


# --- writing the run folder ------------------------------------------------------------------
@dataclass
class WrittenRun:
    run_dir: Path
    checkpoint: Path
    parameters: dict[str, int]  # per imported network
    resumable: bool
    report: list[str]


def _build(family: str, config: dict[str, Any]):
    """(typed config, recipe built on the meta device: shapes without memory)."""
    recipe_cls = registry.recipe_class(family)
    try:
        cfg = config_from_dict(recipe_cls.config_class, config)
    except ConfigError as exc:
        raise UnsupportedCheckpoint(f"the converted config is not a valid {family} config: {exc}") from None
    with torch.device("meta"):
        recipe = recipe_cls(cfg, torch.device("meta"))
    return cfg, recipe


def check_state_dict(net: nn.Module, sd: dict[str, torch.Tensor], what: str) -> list[str]:
    """Problems of ``sd`` as the state dict of ``net``: missing, unexpected, wrong shapes."""
    want = net.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want
              if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    out = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
            out.append(f"{what}: {len(items)} {label}: {', '.join(items[:4])}{more}")
    return out


def _param_names(spec, nets: dict[str, nn.Module]) -> list[str]:
    """Names of an optimiser's parameters, in the order build_optimizer takes them."""
    return [f"{n}.{k}" for n in spec.networks for k, p in nets[n].named_parameters() if p.requires_grad]


def _optimizer_state(name: str, spec, nets: dict[str, nn.Module], given: dict[str, Any] | None,
                     problems: list[str]) -> dict[str, Any]:
    """A torch Adam state_dict for the recipe's optimiser ``name``, filled from ``given``."""
    opt = build_optimizer(spec, nets, name)
    sd = opt.state_dict()
    names = _param_names(spec, nets)
    params = dict(zip(names, (p for n in spec.networks for p in nets[n].parameters() if p.requires_grad)))
    state: dict[int, Any] = {}
    for pname, st in ((given or {}).get("state") or {}).items():
        if pname not in params:
            problems.append(f"optimizer {name}: state for unknown parameter {pname}")
            continue
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.ndim > 0 and tuple(v.shape) != tuple(params[pname].shape):
                problems.append(f"optimizer {name}: {pname}.{k} has shape {tuple(v.shape)}, the parameter "
                                f"{tuple(params[pname].shape)}")
        state[names.index(pname)] = {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                                     for k, v in st.items()}
    sd["state"] = state
    return sd


def write_run(run: ImportedRun, out: str | os.PathLike, source: str | os.PathLike) -> WrittenRun:
    """Check ``run`` against networks built from its config and write it as the run folder
    ``out`` (atomically; ``out`` must not exist or be empty)."""
    out, source = Path(out), Path(source)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VidgenError(f"{out} already exists and is not empty; choose a new folder for --out")
    cfg, recipe = _build(run.family, run.config)
    nets = recipe.networks()
    emas = {k: make_ema(k, nets[k], s) for k, s in recipe.ema().items()}
    expected: dict[str, nn.Module] = dict(nets)
    base_of: dict[str, str] = {}
    for k, e in emas.items():
        for copy_name, module in e.copies().items():
            expected[copy_name] = module
            base_of[copy_name] = k
    problems: list[str] = []
    for name, sd in run.networks.items():
        if name not in expected:
            problems.append(f"network {name!r} is not one of {run.family}'s ({', '.join(expected)})")
            continue
        problems += check_state_dict(expected[name], sd, name)
    networks = dict(run.networks)
    report = list(run.report)
    for copy_name, base in base_of.items():  # EMA copies the file lacks start from their network
        if copy_name not in networks:
            first = f"{base}_ema"
            src = first if first in run.networks else base if base in run.networks else None
            if src is not None:
                networks[copy_name] = run.networks[src]
                report.append(f"{copy_name}: not in the file; starts as a copy of {src}")
    specs = recipe.optimizers()
    tensors: dict[str, torch.Tensor] = {}
    optim_states = {}
    for k, spec in specs.items():
        if k not in run.optimizers:
            optim_states[k] = _optimizer_state(k, spec, nets, None, problems)
            continue
        optim_states[k] = _optimizer_state(k, spec, nets, run.optimizers[k], problems)
    for k in run.optimizers:
        if k not in specs:
            problems.append(f"optimizer {k!r} is not one of {run.family}'s ({', '.join(specs)})")
    if problems:
        raise UnsupportedCheckpoint(f"{source}: the converted checkpoint does not fit vidgen's {run.family} networks: "
                           + "; ".join(problems))
    optim = {k: ckpt.split_state(sd, f"optim/{k}", tensors) for k, sd in optim_states.items()}
    recipe_state = ckpt.split_state(run.recipe_state, "recipe", tensors)
    missing = [n for n in expected if n not in networks]
    resumable = not missing and all(k in run.optimizers for k in specs)
    if missing:
        report.append(f"not resumable: the file has no {', '.join(missing)}; start a new run from it with "
                      f"`vidgen train {run.family} --init RUN`")
    elif not resumable:
        report.append("optimiser states: not in the file; fresh Adam moments for --resume")
    sha = sha256_file(source)
    state = {
        "family": run.family, "config": config_to_dict(cfg), "step": run.step, "nimg": run.nimg, "world_size": 1,
        "rng": [], "networks": list(networks),
        "sampler": {"consumed": 0, "seed": cfg.engine.seed, "dataset_len": -1},
        "counters": {"nonfinite_losses": 0, "nonfinite_grads": 0},
        "optimizers": optim, "recipe": recipe_state, "time": time.time(),
        "imported": {"source": str(source.resolve()), "sha256": sha, "resumable": resumable},
    }
    flat = {f"{n}/{k}": v.detach().contiguous() for n, sd in networks.items() for k, v in sd.items()}
    params = {n: count_parameters(expected[n]) for n in networks}
    with atomic_dir(out) as tmp:
        dump_yaml(cfg, tmp / "config.yaml")
        (tmp / "import.json").write_text(json.dumps({
            "source": str(source.resolve()), "sha256": sha, "family": run.family, "resolution": run.resolution,
            "step": run.step, "nimg": run.nimg, "parameters": params, "resumable": resumable, "report": report,
        }, indent=1) + "\n")
        ckpt.write_checkpoint(ckpt.checkpoint_dir(tmp, run.step), flat, tensors, state)
    return WrittenRun(out, ckpt.checkpoint_dir(out, run.step), params, resumable, report)
