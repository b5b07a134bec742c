"""Run folders and checkpoints: safetensors for tensors, JSON for the rest, never pickle.

Layout of a run (``{out_dir}/{NNNNN}-{recipe.run_name()}``)::

    config.yaml                 the resolved config the run was started with
    stats.jsonl                 one line of stats per tick (see log.py)
    samples/                    periodic sample media
    phema/                      power-EMA snapshots (see ema.py)
    checkpoints/step-000001000/
        networks.safetensors    "{network}/{tensor}" for every network and EMA copy
        train.safetensors       "optim/{optimizer}/{param index}/{key}", "recipe/{key}"
        state.json              family, config, step, nimg, RNG states of every rank,
                                sampler position, recipe JSON state, optimiser groups,
                                and the sha256 and size of both safetensors files

A checkpoint folder is built under a hidden temporary name (every file fsynced) and renamed
into place (``vidgen.fileio.atomic_dir``), so a checkpoint either exists whole or not at
all, and a write that fails leaves the checkpoints already there untouched. ``state.json`` carries a checksum of its
own body, and reading checks all three files: a truncated or corrupted checkpoint is
detected, and ``resolve_checkpoint`` on a run folder falls back to the newest good one with
a warning. A pickle (``.pt``/``.pkl``) given or renamed as a checkpoint is refused without
being unpickled.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from vidgen.fileio import atomic_dir, sha256_file, write_safetensors
from vidgen.errors import VidgenError

FORMAT = "vidgen-checkpoint-1"
_STEP_DIR = re.compile(r"^step-(\d{9})$")


class CheckpointError(VidgenError):
    """A checkpoint that is missing, truncated, corrupted or not in vidgen's format."""


# --- writing ---------------------------------------------------------------------------------
def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    # inside the checkpoint's temporary folder, which atomic_dir publishes as a whole
    write_safetensors(path, tensors, {"format": FORMAT}, atomic=False)


def _body_checksum(state: dict[str, Any]) -> str:
    body = {k: v for k, v in state.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)) and obj.ndim == 0:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"checkpoint state must be JSON-able (or tensors in recipe state); got {type(obj).__name__}")


def write_checkpoint(folder: Path, networks: dict[str, torch.Tensor], train: dict[str, torch.Tensor],
                     state: dict[str, Any]) -> Path:
    """Write one checkpoint folder atomically; ``state`` must be JSON-able. Returns ``folder``.

    A folder of the same name (the same step, written again after a resume) is replaced only
    once the new one is complete. A write that fails (disk full, ...) raises CheckpointError
    and leaves every checkpoint already there as it was."""
    folder = Path(folder)
    try:
        with atomic_dir(folder) as tmp:
            files = {}
            for name, tensors in (("networks.safetensors", networks), ("train.safetensors", train)):
                _save_tensors(tmp / name, tensors)
                files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            state = json.loads(json.dumps(dict(state, format=FORMAT, files=files), default=_json_default))
            state["checksum"] = _body_checksum(state)
            (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {folder} ({exc}); the checkpoints already in "
                              f"{folder.parent} are unchanged. Free disk space or fix permissions, then "
                              "resume with --resume auto.") from None
    return folder


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:09d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (by step)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def prune_checkpoints(run_dir: Path, keep_last: int, milestone_every: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints, keeping milestones. Returns removed."""
    ckpts = list_checkpoints(run_dir)
    removed = []
    for path in ckpts[: max(len(ckpts) - max(keep_last, 1), 0)]:
        step = int(_STEP_DIR.match(path.name).group(1))
        if milestone_every > 0 and step % milestone_every == 0:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    for stale in (Path(run_dir) / "checkpoints").glob(".*"):  # temporary folders left by a killed writer
        if stale.is_dir() and ".tmp-" in stale.name:
            shutil.rmtree(stale, ignore_errors=True)
    return removed


# --- reading ---------------------------------------------------------------------------------
def _refuse_pickle(path: Path) -> None:
    """Refuse pickles by their first bytes (never by trying to load them). A safetensors file
    starts with its header length (8 bytes, little-endian) and then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    safetensors_frame = len(head) == 9 and head[8:9] == b"{"
    pickled = (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) \
        or head.startswith(b"PK\x03\x04")  # pickle protocol 2-5; torch.save zip archive
    if pickled and not safetensors_frame:
        raise CheckpointError(
            f"{path} is a pickle / torch.save archive, not a vidgen checkpoint; vidgen never "
            "unpickles files because loading a pickle can run arbitrary code. Convert trusted "
            "weights with torch.load(weights_only=True) and save them as safetensors.")


@dataclass
class Checkpoint:
    """A verified checkpoint folder. Tensors are read lazily, on CPU."""

    path: Path
    state: dict[str, Any] = field(repr=False)

    @property
    def family(self) -> str:
        return self.state["family"]

    @property
    def config(self) -> dict[str, Any]:
        return self.state["config"]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def nimg(self) -> int:
        return int(self.state.get("nimg", 0))

    @property
    def network_names(self) -> list[str]:
        return list(self.state.get("networks", []))

    def network_state(self, name: str) -> dict[str, torch.Tensor]:
        """State dict of one network or EMA copy (e.g. ``"G_ema"``), on CPU."""
        if name not in self.network_names:
            raise CheckpointError(f"{self.path} has no network {name!r}; it has: {', '.join(self.network_names)}")
        prefix = name + "/"
        out = {}
        with safe_open(str(self.path / "networks.safetensors"), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    out[key[len(prefix):]] = f.get_tensor(key)
        return out

    def train_tensors(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "train.safetensors"))


def load_state(net: torch.nn.Module, c: Checkpoint, name: str) -> torch.nn.Module:
    """Load network ``name`` of checkpoint ``c`` into ``net``, every key and shape checked;
    CheckpointError names what does not fit (a checkpoint of another config or family)."""
    sd = c.network_state(name)
    want = net.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(want[k].shape)}" for k in want
              if k in sd and sd[k].shape != want[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                 if items]
        raise CheckpointError(f"{c.path}: the {name} weights do not fit the network built from its config "
                              f"({'; '.join(parts)})")
    net.load_state_dict(sd)
    return net


def load_network(c: Checkpoint | str | os.PathLike, names: str | tuple[str, ...],
                 build: Callable[[dict[str, Any]], torch.nn.Module],
                 device: str | torch.device = "cpu") -> torch.nn.Module:
    """The one way from a checkpoint to a network: ``build(c.config)`` makes the network, the
    first of ``names`` that the checkpoint holds (e.g. ``("G_ema", "G")``) is loaded into it
    with every key and shape checked (:func:`load_state`); returned on ``device``."""
    if not isinstance(c, Checkpoint):
        c = read_checkpoint(c)
    names = (names,) if isinstance(names, str) else tuple(names)
    name = next((n for n in names if n in c.network_names), None)
    if name is None:
        raise CheckpointError(f"{c.path} has none of the networks {', '.join(names)}; it has: "
                              f"{', '.join(c.network_names)}")
    net = build(c.config)
    return load_state(net, c, name).to(device)


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """Check format, checksums and sizes; return the state. CheckpointError if anything is off."""
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a checkpoint folder (no state.json)")
    _refuse_pickle(state_file)
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{state_file} is truncated or corrupted ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{state_file} is not a {FORMAT} state file")
    if state.get("checksum") != _body_checksum(state):
        raise CheckpointError(f"{state_file} is corrupted (checksum mismatch)")
    for name, info in state["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        _refuse_pickle(f)
        if f.stat().st_size != info["bytes"]:
            raise CheckpointError(f"{f} is truncated ({f.stat().st_size} of {info['bytes']} bytes)")
        if sha256_file(f) != info["sha256"]:
            raise CheckpointError(f"{f} is corrupted (sha256 mismatch)")
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:  # checksum matched a bad file: not ours
            raise CheckpointError(f"{f} is not a safetensors file ({exc})") from None
    return state


def _locate(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """(checkpoint folder, its verified state if already checked) for any accepted path."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a run folder or a checkpoint folder")
    if path.is_file():
        _refuse_pickle(path)
        if path.parent.joinpath("state.json").is_file():
            return path.parent, None
        raise CheckpointError(f"{path} is not part of a vidgen checkpoint folder")
    if (path / "state.json").is_file():
        return path, None
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise CheckpointError(f"{path} holds no checkpoints (expected {path}/checkpoints/step-*/)")
    for ckpt in reversed(ckpts):
        try:
            return ckpt, verify_checkpoint(ckpt)
        except CheckpointError as exc:
            warnings.warn(f"skipping bad checkpoint: {exc}", stacklevel=3)
    raise CheckpointError(f"{path}: every checkpoint is truncated or corrupted; start a new run")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder -> its newest good checkpoint (skipping bad ones with a warning);
    a checkpoint folder or a file in one -> that folder."""
    return _locate(Path(path))[0]


def read_checkpoint(path: str | os.PathLike, verify: bool = True) -> Checkpoint:
    """Open a checkpoint (run folder, checkpoint folder or a file in one); with ``verify`` its
    checksums are checked (CheckpointError if it is damaged)."""
    folder, state = _locate(Path(path))
    if state is None:
        state = verify_checkpoint(folder) if verify else json.loads((folder / "state.json").read_text())
    return Checkpoint(folder, state)


_RUN_DIR = re.compile(r"^(\d{5,})-(.+)$")


def _runs(out_dir: Path) -> list[tuple[int, Path]]:
    """(number, folder) of every run folder ``NNNNN-...`` under ``out_dir``, by number."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in out_dir.iterdir()
                  if (m := _RUN_DIR.match(p.name)) and p.is_dir())


def latest_run(out_dir: Path, run_name: str) -> Path | None:
    """The newest run folder ``NNNNN-{run_name}`` under ``out_dir`` that has a checkpoint."""
    for _, run in reversed(_runs(out_dir)):
        if run.name.split("-", 1)[1] == run_name and list_checkpoints(run):
            return run
    return None


@contextlib.contextmanager
def _numbering_lock(out_dir: Path):
    """Serialise run numbering between processes sharing ``out_dir``: an advisory lock on the
    folder itself (no lock file left behind); where ``fcntl`` is missing, mkdir's atomicity
    alone guards the name."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def new_run_dir(out_dir: Path, run_name: str) -> Path:
    """Create ``{out_dir}/{NNNNN}-{run_name}`` with the next free number. Numbers are unique
    across run names, also when several runs start at once in the same ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _numbering_lock(out_dir):
        n = max((num for num, _ in _runs(out_dir)), default=-1) + 1
        while True:
            path = out_dir / f"{n:05d}-{run_name}"
            try:
                path.mkdir()
                return path
            except FileExistsError:
                n += 1


# --- state <-> (JSON, tensors) ---------------------------------------------------------------
def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's torch (CPU and CUDA), numpy and python RNG states, as JSON."""
    np_state = np.random.get_state()
    out = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if device.type == "cuda":
        out["cuda"] = base64.b64encode(torch.cuda.get_rng_state(device).numpy().tobytes()).decode()
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["cuda"])), dtype=torch.uint8), device)


def split_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor inside nested dicts/lists by ``{"__tensor__": key}`` and put it in
    ``tensors[key]``; the rest must be JSON-able."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {str(k): split_state(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def join_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_state` (tuples come back as lists)."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: join_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_state(v, tensors) for v in obj]
    return obj


def optimizer_state(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    return split_state(opt.state_dict(), prefix, tensors)


def load_optimizer_state(opt: torch.optim.Optimizer, saved: Any, tensors: dict[str, torch.Tensor]) -> None:
    sd = join_state(saved, tensors)
    sd["state"] = {int(k): v for k, v in sd["state"].items()}  # JSON keys are strings
    for group in sd["param_groups"]:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    opt.load_state_dict(sd)
