"""Multi-process training under ``torchrun`` (nccl on CUDA, gloo on CPU).

The engine does not wrap networks in ``DistributedDataParallel``: GAN phases train different
networks, and R1 / path-length penalties need double backward, both of which DDP handles
poorly. Instead every rank computes gradients on its own share of the batch and
:func:`all_reduce_grads` averages them in one flat all-reduce before the optimiser step, so
every rank applies the same update to the same weights (which start equal: rank 0's are
broadcast). Losses and stats are averaged the same way, so every rank takes the same
decisions (non-finite guard, ADA). Each rank reads its own positions of one seeded sample
stream (``vidgen.data.sampler.InfiniteSampler``) through :func:`make_loader`.

    torchrun --nproc_per_node 2 -m vidgen train toygan --config configs/toygan-tiny.yaml
"""

from __future__ import annotations

import importlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vidgen.argtypes import resolve_device
from vidgen.errors import ConfigError, VidgenError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    """The device of engine.device (``auto``, ``cpu``, ``cuda``); each rank takes its own GPU."""
    try:
        device = resolve_device(pref, "engine.device")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def check_engine(cfg, world_size: int) -> torch.device:
    """What a run checks before it starts, so that ``--dry-run`` refuses the same: the device
    exists, and the batch splits evenly over ranks and accumulation rounds."""
    device = pick_device(cfg.device)
    if cfg.batch % (world_size * cfg.accum):
        raise ConfigError(f"engine.batch={cfg.batch} must be divisible by world size {world_size} "
                          f"x engine.accum {cfg.accum}")
    return device


# Modules of torch that bind ``group.WORLD`` as a default argument when they are imported.
# torch.distributed.nn.functional comes in with torch._dynamo, which the first optimiser
# imports. Imported after init_process_group, they hold the group, so destroy_process_group
# cannot free it: its gloo threads then outlive training and are torn down during interpreter
# exit in no fixed order, which now and then aborts a rank with "terminate called without an
# active exception" (exit -6) after a successful run. Imported before, they bind None.
_BIND_WORLD_AT_IMPORT = ("torch._dynamo", "torch.distributed.nn.functional",
                         "torch.distributed.optim.zero_redundancy_optimizer",
                         "torch.distributed.fsdp.sharded_grad_scaler")


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        for name in _BIND_WORLD_AT_IMPORT:
            importlib.import_module(name)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def shutdown(info: DistInfo) -> None:
    """Destroy the process group (its communication threads stop here, not at exit)."""
    if info.active and dist.is_initialized():
        dist.destroy_process_group()


def backend_threads() -> list[str]:
    """Names of this process's threads that belong to a process-group backend (gloo, nccl);
    empty once the group is destroyed. Linux only (an empty list elsewhere)."""
    names = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return names
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if "gloo" in name or "nccl" in name.lower():
            names.append(name)
    return sorted(names)


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not info.active:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def all_reduce_grads(params: list[nn.Parameter], info: DistInfo) -> None:
    """Average gradients over ranks in one flat all-reduce. A parameter without a gradient on
    every rank keeps ``grad = None`` (so Adam skips it, as in a single process); one with a
    gradient on some ranks gets the sum over those divided by the world size."""
    if not info.active or not params:
        return
    ref = next(p for p in params)
    chunks = []
    for p in params:
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        chunks.append(g.reshape(-1).to(torch.float32))
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=ref.device)
    flat = torch.cat(chunks + [present])
    dist.all_reduce(flat)
    flat[: flat.numel() - len(params)] /= info.world_size
    offset = 0
    counts = flat[-len(params):].tolist()  # one device sync, not one per parameter
    for i, p in enumerate(params):
        n = p.numel()
        if counts[i] > 0:
            g = flat[offset: offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        offset += n


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a float tensor over ranks (a copy; the input is unchanged)."""
    if not info.active:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out / info.world_size


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's JSON-able ``obj`` (e.g. its RNG states), in rank order, on every rank."""
    if not info.active:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def on_main(fn, info: DistInfo):
    """``fn()`` run on rank 0 only, its (picklable) result given to every rank. A user error
    there (VidgenError, or an OSError of the machine) is raised on every rank, so no rank waits
    for a peer that has already stopped."""
    if not info.active:
        return fn()
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except (VidgenError, OSError) as exc:
            error = str(exc)
            payload = [(None, error)]
            dist.broadcast_object_list(payload, src=0)
            raise
    payload = [(result, error)]
    dist.broadcast_object_list(payload, src=0)
    result, error = payload[0]
    if error is not None:
        raise VidgenError(error)
    return result


# --- per-rank data ---------------------------------------------------------------------------
def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s RNGs (rank 0 uses ``seed`` itself)."""
    return seed + 1_000_003 * rank


def group_seed(seed: int, step: int, phase: int, group: int) -> int:
    """Seed of the RNGs while group ``group`` of step ``step`` runs phase number ``phase``."""
    state = np.random.SeedSequence([seed, step, phase, group]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])  # < 2**63


def seed_group(seed: int, step: int, phase: int, group: int, device: torch.device) -> None:
    """Seed the torch (CPU and ``device``), numpy and python RNGs for one group's share of a
    phase. A group is one accumulation round of one rank: round ``a`` of rank ``r`` is group
    ``a * world_size + r`` and holds the samples at positions ``group, group + G, ...`` of
    the step's global batch (G = world_size x accum; :func:`split_batch`, InfiniteSampler),
    so a run draws the same random numbers for the same samples however its G groups are
    spread over ranks and rounds."""
    s = group_seed(seed, step, phase, group)
    torch.default_generator.manual_seed(s)  # torch.manual_seed also walks every device: slow
    if device.type == "cuda":
        torch.cuda.manual_seed(s)  # the current device: this rank's
    np.random.seed(s % 2**32)
    random.seed(s)


def split_batch(batch: Any, n: int) -> list[Any]:
    """Split tensors (in nested tuples / lists / dicts) into ``n`` micro-batches along dim 0,
    interleaved: micro-batch ``a`` holds rows ``a, a + n, a + 2n, ...`` (a rank holds every
    ``world_size``-th sample of the global batch, so round ``a`` of rank ``r`` holds every
    ``n * world_size``-th one from position ``a * world_size + r``; see :func:`seed_group`)."""
    if n == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        assert batch.shape[0] % n == 0, f"a batch of {batch.shape[0]} does not split into {n} rounds"
        return [batch[a::n].contiguous() for a in range(n)]
    if isinstance(batch, (list, tuple)):
        parts = [split_batch(b, n) for b in batch]
        return [type(batch)(p[i] for p in parts) for i in range(n)]
    if isinstance(batch, dict):
        parts = {k: split_batch(v, n) for k, v in batch.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    return [batch] * n


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class _PositionedSampler(torch.utils.data.Sampler):
    """Yields ``(dataset index, global stream position)`` from an InfiniteSampler."""

    def __init__(self, base):
        self.base = base

    def __iter__(self):
        for idx in self.base:  # the base advanced by world_size after choosing this index
            yield idx, self.base.position - self.base.world_size + self.base.rank

    def __len__(self) -> int:
        return len(self.base)


class _PositionSeeded(torch.utils.data.Dataset):
    """Runs ``base[index]`` with the torch / numpy / python RNGs seeded by the stream position,
    so random choices inside a dataset (e.g. a random clip window) depend only on where the
    item falls in the stream: the same on resume, with any number of loader workers. In the
    main process (``workers = 0``) the training RNGs are restored afterwards."""

    def __init__(self, base, seed: int):
        self.base, self.seed = base, seed

    def __len__(self) -> int:
        return len(self.base)

    def _seed(self, position: int) -> None:
        s = (self.seed * 0x9E3779B1 + position * 2_654_435_761) % 2**63
        torch.default_generator.manual_seed(s)  # torch.manual_seed also walks every device: slow
        np.random.seed(s % 2**32)
        random.seed(s)

    def __getitem__(self, item):
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list) -> list:
        """A whole batch (the DataLoader calls this): RNG states saved and restored once, and
        only in the main process (a worker's RNGs are its own)."""
        main = torch.utils.data.get_worker_info() is None
        saved = (torch.get_rng_state(), np.random.get_state(), random.getstate()) if main else None
        try:
            out = []
            for idx, position in items:
                self._seed(position)
                out.append(self.base[idx])
            return out
        finally:
            if saved is not None:
                torch.set_rng_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])


class Batches:
    """An infinite iterator of batches whose :meth:`close` stops the loader's worker processes
    at once (instead of whenever the iterator happens to be garbage-collected)."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self._it = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            raise RuntimeError("the batch iterator is closed")
        return next(self._it)

    def close(self) -> None:
        it, self._it = self._it, None
        stop = getattr(it, "_shutdown_workers", None)  # the multi-process iterator's own cleanup
        if stop is not None:
            stop()


def make_loader(dataset, cfg, info: DistInfo, consumed: int) -> Batches:
    """This rank's infinite iterator of batches of ``cfg.batch / world_size`` samples (``cfg``:
    the EngineConfig), starting after ``consumed`` samples of all ranks together. Items are
    drawn as described in :class:`_PositionSeeded`, so resume is exact for any dataset whose
    item depends only on its index and the RNGs. Close it when done."""
    from vidgen.data.sampler import InfiniteSampler

    sampler = InfiniteSampler(len(dataset), seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                              shuffle=True, start=consumed)
    loader = torch.utils.data.DataLoader(
        _PositionSeeded(dataset, cfg.seed), batch_size=cfg.batch // info.world_size,
        sampler=_PositionedSampler(sampler), num_workers=cfg.workers,
        pin_memory=info.device.type == "cuda", drop_last=True,
        generator=torch.Generator().manual_seed(rank_seed(cfg.seed, info.rank)),  # global RNG untouched
        persistent_workers=cfg.workers > 0)
    return Batches(loader)
