"""The one training loop of every model family (the step is described in recipe.py).

    run_dir = train(ToyGANRecipe, cfg, resume="auto")

The engine owns: per-rank seeding and data (``vidgen.data.sampler.InfiniteSampler``),
gradient accumulation, gradient averaging over ranks (dist.py), precision (precision.py),
learning-rate schedules and the lazy-regularisation compensation of ``OptimizerSpec`` (optim.py),
non-finite guards, EMA (ema.py), checkpoints and resume (checkpoint.py) and logging (log.py).

Details a recipe can rely on:
- ``phase.loss(micro_batch, step)`` gets the 0-based index of the step; a phase runs when
  ``step % phase.interval == 0`` and its loss is multiplied by ``interval / accum``.
- EMA copies are updated once per step, after all phases (as StyleGAN2 does), for the
  networks trained in that step; ``t`` (ema.py) is the number of steps done.
- The loss and the stats of each phase are averaged over ranks before anything uses them
  (``recipe.end_step`` gets these averages), so every rank takes the same decisions.
- A non-finite loss (averaged over ranks) skips that phase's optimiser step; non-finite
  gradient entries are zeroed (EDM2) and counted. ``engine.max_nonfinite`` non-finite losses
  in a row in one phase stop the run with :class:`NonFiniteError`; no checkpoint is written
  while such a run lasts, so the newest checkpoint is the last good one.
- Learning rate at step s: ``lr * min((s + 1) / rampup_steps, 1)`` and, for ``inv_sqrt``,
  ``/ sqrt(max(s / ref_steps, 1))`` (EDM2, docs/METHODS.md 4).
- Randomness in ``phase.loss`` must come from the global torch / numpy / python RNGs (or
  from the batch): they are seeded for each group of the global batch before it runs a phase
  (dist.seed_group), so W ranks train like one process with W times the accumulation rounds.
  Buffers a forward pass moves (running statistics, vidgen/nn/stats.py) are averaged over the
  groups after each phase (sync.py) and checked equal on every rank every
  ``engine.consistency_every`` steps. ``dataset[i]`` may use the RNGs too: the loader seeds them per item from
  its position in the sample stream (dist.make_loader). Then resume is bitwise exact, with
  any number of loader workers.
- ``recipe.sample`` runs on rank 0 inside a forked RNG, so it never changes training.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidgen.config import config_to_dict, dump_yaml
from vidgen.errors import ConfigError, DataError, VidgenError, describe_os_error
from vidgen.train import checkpoint as ckpt
from vidgen.train.dist import (DistInfo, all_reduce_grads, all_reduce_mean, broadcast_module,  # noqa: F401
                               gather_objects, init_distributed, make_loader, on_main, rank_seed, seed_group,
                               shutdown, split_batch, to_device)
from vidgen.train.ema import EMA, make_ema
from vidgen.train.log import StatsAverager, Timer, TrainLogger, save_samples, truncate_stats
from vidgen.train.resume import check_resume
from vidgen.train.runplan import plan_run
from vidgen.train.optim import build_optimizer, check_lazy_regularisation, scheduled_lr  # noqa: F401 (re-exported)
from vidgen.train.recipe import Phase, Recipe
from vidgen.nn.fp16 import run_in_fp16
from vidgen.train.precision import LossScaler, plan_precision
from vidgen.train.sync import GroupStatistics, RankMismatchError, check_consistency, state_tensors


class NonFiniteError(VidgenError):
    """Training diverged: too many non-finite losses in a row."""


def compile_networks(nets: dict[str, nn.Module]) -> None:
    """``engine.compile``: each network's own calls go through torch.compile (``Module.compile``,
    in place, so the recipe's references, parameter names and checkpoints stay as they are).
    The first steps pay the compilation; methods other than ``forward`` run as written."""
    for net in nets.values():
        net.compile()


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Trainer:
    """State of one run; :func:`train` drives it. Split out so tools can time single steps."""

    def __init__(self, recipe_cls: type[Recipe], cfg: Any, info: DistInfo):
        self.cfg, self.ecfg, self.info = cfg, cfg.engine, info
        e = self.ecfg
        if e.batch % (info.world_size * e.accum):
            raise ConfigError(f"engine.batch={e.batch} must be divisible by world size {info.world_size} "
                              f"x engine.accum {e.accum}")
        self.precision = plan_precision(e.precision, info.device, recipe_cls.mixed_precision)
        self.autocast = torch.autocast(info.device.type, dtype=self.precision.autocast or torch.bfloat16,
                                       enabled=self.precision.autocast is not None)
        self.scaler = LossScaler() if self.precision.loss_scaling else None
        seed_all(e.seed)  # the same initial weights on every rank (rank 0's are broadcast anyway)
        self.recipe = recipe_cls(cfg, info.device)
        self.nets = {k: v.to(info.device) for k, v in self.recipe.networks().items()}
        self._trainable = {k: [p.requires_grad for p in v.parameters()] for k, v in self.nets.items()}
        for net in self.nets.values():
            broadcast_module(net, info)
        self.specs = self.recipe.optimizers()
        self.opts = {k: build_optimizer(s, self.nets, k) for k, s in self.specs.items()}
        self.phases = self.recipe.phases()
        for ph in self.phases:
            if ph.optimizer not in self.opts:
                raise ConfigError(f"phase {ph.name!r} uses optimizer {ph.optimizer!r}; the recipe has {', '.join(self.opts)}")
        check_lazy_regularisation(self.specs, self.phases)
        self.emas: dict[str, EMA] = {k: make_ema(k, self.nets[k], s) for k, s in self.recipe.ema().items()}
        if self.precision.fp16_layers:  # the trained networks only: EMA copies compute in float32
            for layer, inputs in self.recipe.fp16_layers(e.num_fp16_res):
                run_in_fp16(layer, inputs)
        self.extra = self.recipe.statistics()  # modules besides the networks with running statistics
        for mod in self.extra.values():
            broadcast_module(mod, info)
        self.statistics = GroupStatistics({**self.nets, **{f"recipe.{k}": m for k, m in self.extra.items()}})
        if e.compile:  # after the EMA copies are made: only the trained networks' calls are compiled
            compile_networks(self.nets)
        self.step, self.nimg = 0, 0
        self.nonfinite_run: dict[str, int] = {}  # phase -> non-finite losses in a row
        self.nonfinite_losses, self.nonfinite_grads = 0, 0
        self._grad_state = None
        self.dataset_len = -1  # set by Run when the data is opened
        seed_all(rank_seed(e.seed, info.rank))

    # --- one step ----------------------------------------------------------------------
    def _set_trainable(self, names: tuple[str, ...]) -> None:
        if self._grad_state == names:
            return
        for k, net in self.nets.items():
            for p, orig in zip(net.parameters(), self._trainable[k]):
                p.requires_grad_(orig and k in names)
        self._grad_state = names

    def run_phase(self, phase: Phase, micros: list[Any], timer: Timer | None, index: int = 0) -> dict[str, float]:
        """Phase number ``index`` of this step on this rank's ``micros`` (one per accumulation
        round). Each round is one group of the global batch (dist.seed_group): the RNGs are
        seeded for it and the running statistics restarted for it (sync.py)."""
        opt = self.opts[phase.optimizer]
        self._set_trainable(phase.trainable)
        opt.zero_grad(set_to_none=True)
        accum, dev = len(micros), self.info.device
        world, rank = self.info.world_size, self.info.rank
        loss_sum, stats = 0.0, {}
        self.statistics.begin()
        for a, micro in enumerate(micros):
            seed_group(self.ecfg.seed, self.step, index, a * world + rank, dev)
            with self.autocast:
                loss, st = phase.loss(micro, self.step)
            scale = self.scaler.scale if self.scaler is not None else 1.0
            (loss * (phase.interval / accum * scale)).backward()
            self.statistics.end_group(last=a == accum - 1)
            loss_sum = loss_sum + loss.detach().float()
            for k, v in st.items():  # kept on the device: one sync per phase, below
                v = torch.as_tensor(v, device=dev).detach().float() / accum
                stats[f"{phase.name}/{k}"] = stats.get(f"{phase.name}/{k}", 0.0) + v
        if timer:
            timer.lap("fwd_bwd")
        params = [p for g in opt.param_groups for p in g["params"]]
        all_reduce_grads(params, self.info)
        grads = [p.grad for p in params if p.grad is not None]
        # a norm is non-finite iff an entry is (one fused kernel instead of one per tensor)
        finite = torch.stack(torch._foreach_norm(grads)).isfinite().all() if grads else torch.ones((), dtype=torch.bool)
        # loss, stats and the running statistics' changes averaged over ranks in one
        # all-reduce, so every rank decides alike and holds the same statistics
        keys = list(stats)
        local = torch.stack([torch.as_tensor(loss_sum / accum, device=dev).float().reshape(())]
                            + [torch.as_tensor(stats[k], device=dev).float().reshape(()) for k in keys])
        mean = all_reduce_mean(torch.cat([local, self.statistics.local_delta().to(dev)]), self.info)
        values = torch.cat([mean[:len(local)], finite.float().to(dev).reshape(1)]).tolist()
        loss_val, grads_ok = values[0], values[-1]
        stats = dict(zip(keys, values[1:-1]), **{f"{phase.name}/loss": loss_val})
        if not math.isfinite(loss_val):
            self.statistics.restore()  # a skipped phase leaves the statistics as they were
            self.nonfinite_losses += 1
            self.nonfinite_run[phase.name] = self.nonfinite_run.get(phase.name, 0) + 1
            if self.nonfinite_run[phase.name] >= self.ecfg.max_nonfinite:
                raise NonFiniteError(f"phase {phase.name!r} at step {self.step}")
            opt.zero_grad(set_to_none=True)
        else:
            if accum * world > 1:  # one group alone keeps its own result, bit for bit
                self.statistics.apply(mean[len(local):])
            self.nonfinite_run[phase.name] = 0
            if self.scaler is not None:  # float16: skip the step on overflow, else unscale
                self.scaler.update(bool(grads_ok))
                if not grads_ok:
                    opt.zero_grad(set_to_none=True)
                    if timer:
                        timer.lap("optimizer")
                    return stats
                torch._foreach_mul_(grads, 1.0 / scale)
            elif not grads_ok:  # EDM2: zero non-finite gradient entries
                self.nonfinite_grads += 1
                for g in grads:
                    torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
            spec = self.specs[phase.optimizer]
            for group in opt.param_groups:
                group["lr"] = scheduled_lr(spec, opt.base_lr, self.step)
            opt.step()
        if timer:
            timer.lap("optimizer")
        return stats

    def train_step(self, batch: Any, timer: Timer | None = None) -> dict[str, float]:
        micros = split_batch(batch, self.ecfg.accum)
        stats: dict[str, float] = {}
        trained: set[str] = set()
        for index, phase in enumerate(self.phases):
            if self.step % phase.interval:
                continue
            stats.update(self.run_phase(phase, micros, timer, index))
            trained.update(phase.trainable)
        self.nimg += self.ecfg.batch
        for name, ema in self.emas.items():
            if name in trained:
                ema.update(self.nets[name], self.step + 1, self.nimg, self.ecfg.batch)
        self.recipe.end_step(self.step, stats)
        self.step += 1
        if timer:
            timer.lap("optimizer")
        return stats

    def check_consistency(self) -> None:
        """RankMismatchError on every rank unless every rank holds the same parameters and
        buffers (networks, EMA copies, the recipe's statistics modules); collective."""
        tensors = [(f"{n}/{k}", t) for n, net in self.all_networks().items()
                   for k, t in [*net.named_parameters(), *net.named_buffers()]]
        tensors += [(f"recipe.{n}/{k}", t) for n, m in self.extra.items() for k, t in m.named_buffers()]
        tensors += state_tensors(self.recipe.state_dict(), "recipe state")  # e.g. ADA's p
        check_consistency(tensors, self.info, self.step)

    # --- state -------------------------------------------------------------------------
    def all_networks(self) -> dict[str, nn.Module]:
        out = dict(self.nets)
        for ema in self.emas.values():
            out.update(ema.copies())
        return out

    def save(self, run_dir: Path, family: str) -> Path | None:
        """Checkpoint (collective: every rank must call it); rank 0 writes."""
        rngs = gather_objects(ckpt.rng_state(self.info.device), self.info)
        if not self.info.is_main:
            return None
        networks = {f"{n}/{k}": v for n, net in self.all_networks().items() for k, v in net.state_dict().items()}
        tensors: dict[str, torch.Tensor] = {}
        optim = {k: ckpt.optimizer_state(o, f"optim/{k}", tensors) for k, o in self.opts.items()}
        recipe_state = ckpt.split_state(self.recipe.state_dict(), "recipe", tensors)
        state = {
            "family": family, "config": config_to_dict(self.cfg), "step": self.step, "nimg": self.nimg,
            "world_size": self.info.world_size, "rng": rngs, "networks": list(self.all_networks()),
            "sampler": {"consumed": self.step * self.ecfg.batch, "seed": self.ecfg.seed,
                        "dataset_len": self.dataset_len},
            "counters": {"nonfinite_losses": self.nonfinite_losses, "nonfinite_grads": self.nonfinite_grads},
            "optimizers": optim, "recipe": recipe_state, "time": time.time(),
        }
        if self.scaler is not None:
            state["loss_scale"] = self.scaler.state_dict()
        path = ckpt.write_checkpoint(ckpt.checkpoint_dir(run_dir, self.step), networks, tensors, state)
        ckpt.prune_checkpoints(run_dir, self.ecfg.keep_last, self.ecfg.milestone_every)
        return path

    def load(self, c: ckpt.Checkpoint) -> None:
        """Continue from checkpoint ``c``: weights, optimisers, recipe state, counters, RNGs.
        Anything in it that does not fit is a CheckpointError naming the file."""
        ckpt.check_resume_fields(c.state, str(c.path / "state.json"))
        for name, net in self.all_networks().items():
            if name not in c.network_names:
                if c.state.get("imported"):
                    raise ckpt.CheckpointError(
                        f"{c.path} was imported from {c.state['imported']['source']} without network {name!r}, so "
                        f"it cannot be resumed; start a new run from it with --init {c.path.parent.parent}")
                raise ckpt.CheckpointError(f"{c.path} has no network {name!r}; was it written by another recipe?")
            ckpt.load_state(net, c, name)
        tensors = c.train_tensors()
        part = "optimizer state"
        try:
            for k, o in self.opts.items():
                if k not in c.state["optimizers"]:
                    raise KeyError(f"no state of optimizer {k!r}")
                ckpt.load_optimizer_state(o, c.state["optimizers"][k], tensors)
            part = "recipe state"
            self.recipe.load_state_dict(ckpt.join_state(c.state["recipe"], tensors))
            if self.scaler is not None and "loss_scale" in c.state:
                part = "loss scale"
                self.scaler.load_state_dict(c.state["loss_scale"])
            part = "RNG state"
            rngs = c.state["rng"]
            if len(rngs) == self.info.world_size:
                ckpt.set_rng_state(rngs[self.info.rank], self.info.device)
            else:  # a different number of ranks: continue with fresh per-rank seeds
                seed_all(rank_seed(self.ecfg.seed + self.step, self.info.rank))
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise ckpt.CheckpointError(f"{c.path}: cannot restore the {part} ({type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:200]}); the checkpoint does not belong "
                                       "to this recipe or was edited") from None
        self.step, self.nimg = c.step, c.nimg
        self.nonfinite_losses = c.state["counters"]["nonfinite_losses"]
        self.nonfinite_grads = c.state["counters"]["nonfinite_grads"]

    def init_from(self, c: ckpt.Checkpoint) -> list[str]:
        """Start from the networks of checkpoint ``c`` (fine-tuning): each network takes the
        weights of the same name, else of its EMA copy (``G`` from ``G_ema``) or, for an EMA
        copy, of its network; optimiser moments are taken where present and of the same shapes,
        with this run's learning rates. Step, EMA schedule and recipe state start afresh.
        Returns one line per network and optimiser saying what it started from."""
        notes = []
        for name, net in self.all_networks().items():
            base = name.split("_ema")[0]
            src = next((n for n in (name, f"{base}_ema", base) if n in c.network_names), None)
            if src is None:
                notes.append(f"{name}: not in {c.path}; freshly initialised")
                continue
            ckpt.load_state(net, c, src)
            notes.append(f"{name}: from {src}")
        tensors = c.train_tensors() if c.state.get("optimizers") else {}
        for k, opt in self.opts.items():
            saved = (c.state.get("optimizers") or {}).get(k)
            note = self._init_optimizer(opt, saved, tensors)
            notes.append(f"optimizer {k}: {note}")
        return notes

    @staticmethod
    def _init_optimizer(opt: torch.optim.Optimizer, saved: Any, tensors: dict[str, torch.Tensor]) -> str:
        if not saved:
            return "fresh (none in the checkpoint)"
        sd = ckpt.join_state(saved, tensors)
        params = [p for g in opt.param_groups for p in g["params"]]
        state = {int(i): v for i, v in sd.get("state", {}).items()}
        if not state:
            return "fresh (the checkpoint's has no moments yet)"
        for i, st in state.items():
            if i >= len(params) or any(isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape != params[i].shape
                                       for v in st.values()):
                return "fresh (the checkpoint's does not fit these parameters)"
        if len(params) != sum(len(g["params"]) for g in sd["param_groups"]):
            return "fresh (the checkpoint's does not fit these parameters)"
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        sd["state"] = state
        for group in sd["param_groups"]:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        opt.load_state_dict(sd)
        for group, h in zip(opt.param_groups, hyper):  # this run's learning rates and betas
            group.update(h)
        return f"moments of {len(state)} parameters from the checkpoint"

    def sample(self, folder: Path, num: int = 16) -> Path | None:
        nets = {k: ema.copies()[f"{k}_ema"] for k, ema in self.emas.items()}
        nets = {**self.nets, **nets}
        np_state, py_state = np.random.get_state(), random.getstate()
        devices = [self.info.device] if self.info.device.type == "cuda" else []
        self.statistics.begin()  # rank 0 alone samples: whatever it runs must not move a statistic
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            media = self.recipe.sample(nets, num, self.ecfg.seed)
        self.statistics.restore()
        np.random.set_state(np_state)
        random.setstate(py_state)
        return None if media is None else save_samples(media, folder, self.step)


def open_dataset(recipe: Recipe, cfg: Any) -> torch.utils.data.Dataset:
    """The recipe's dataset; a DataError says it came from ``data.path`` (``--data``)."""
    where = getattr(getattr(cfg, "data", None), "path", None)
    hint = f"the training data {where!r} (data.path, set by --data)" if where is not None else "the training data"
    try:
        dataset = recipe.dataset()
    except DataError as exc:
        raise DataError(f"cannot read {hint}: {exc}") from None
    if len(dataset) == 0:
        raise DataError(f"{hint} holds no samples; pass a dataset folder made by `vidgen data prepare` "
                        "or a folder of videos / frames")
    return dataset


def train(recipe_cls: type[Recipe], cfg: Any, resume: str | None = None, init: str | None = None) -> Path:
    """Train ``recipe_cls`` with ``cfg``; ``resume`` is None, "auto" (the newest run of this
    recipe under ``engine.out_dir``, or a fresh one) or a run / checkpoint folder. ``init``: a
    run or checkpoint folder whose networks a new run starts from (:meth:`Trainer.init_from`;
    ignored when a run is resumed). Returns the run folder.

    Teardown, on success and on error alike: the loader workers and the logger first (they
    belong to this rank alone), then the process group, whose threads end there."""
    info = init_distributed(cfg.engine.device)
    try:
        return _train(recipe_cls, cfg, resume, info, init)
    finally:
        shutdown(info)


class Run:
    """One run, set up and stepped one loop iteration at a time (``train`` drives it; tools
    can interleave it with other work)."""

    def __init__(self, recipe_cls: type[Recipe], cfg: Any, resume: str | None, info: DistInfo,
                 init: str | None = None):
        e = self.e = cfg.engine
        self.info, self.family = info, recipe_cls.family
        self.lock = None  # rank 0 holds the run folder's lock (vidgen.lockfile.PathLock)
        self.data = self.log = None
        tr = self.tr = Trainer(recipe_cls, cfg, info)
        dataset = open_dataset(tr.recipe, cfg)  # before the run folder: a bad data path leaves nothing behind
        tr.dataset_len = len(dataset)
        # before the run folder, like the data: a bad --init leaves nothing behind (a resumed run
        # then replaces all of it: weights, optimisers, step)
        init_notes = self._init(init) if init else []

        def choose() -> tuple[str, str | None, list[str]]:
            plan = plan_run(e.out_dir, tr.recipe.run_name(), resume)
            self.lock = plan.lock
            return str(plan.run_dir), str(plan.source) if plan.source else None, plan.notes
        run_dir, source, notes = on_main(choose, info)
        self.run_dir = Path(run_dir)
        try:  # from here on a failure releases the run folder (close)
            notes = notes + self._resume(cfg, source, dataset)  # every rank
            on_main(lambda: self._prepare_folder(cfg, source is not None), info)
            if source is None and init:
                notes.append(f"started from the networks of {init}: " + "; ".join(init_notes))
            self.log = TrainLogger(self.run_dir, e.steps, tr.step, enabled=info.is_main)
            for note in notes:
                self.log.write(note)
            self.data = make_loader(dataset, e, info, consumed=tr.step * e.batch)
        except BaseException:
            self.close()
            raise
        self.timer, self.avg = Timer(), StatsAverager()
        self.t0 = self.tick_start = time.perf_counter()
        self.tick_step = tr.step

    def _resume(self, cfg: Any, source: str | None, dataset) -> list[str]:
        """Load the checkpoint ``source`` if any (every rank reads the same files, so every
        rank fails alike); the lines to log."""
        if source is None:
            return []
        tr = self.tr
        c = ckpt.read_checkpoint(source)
        if c.family != self.family:
            raise ckpt.CheckpointError(f"{c.path} is a {c.family!r} checkpoint, not {self.family!r}")
        notes = check_resume(c, config_to_dict(cfg), tr.all_networks())
        tr.load(c)
        self.resumed_config = c.config
        notes.insert(0, f"resumed from {source} at step {tr.step}")
        if c.state["sampler"].get("dataset_len") not in (None, -1, len(dataset)):
            notes.append(f"warning: the dataset had {c.state['sampler']['dataset_len']} items when "
                         f"{c.path} was written and has {len(dataset)} now; resume is not exact")
        return notes

    def _prepare_folder(self, cfg: Any, resumed: bool) -> None:
        """Rank 0: the resolved config and stats.jsonl cut back to the step the run starts at."""
        try:
            if not resumed:
                dump_yaml(cfg, self.run_dir / "config.yaml")
            elif config_to_dict(cfg) != self.resumed_config:  # e.g. more steps: keep both
                dump_yaml(cfg, self.run_dir / f"config-resume-{self.tr.step:09d}.yaml")
            truncate_stats(self.run_dir, self.tr.step)
        except OSError as exc:
            raise VidgenError(f"cannot write to the run folder {self.run_dir}: {describe_os_error(exc)}") from None

    def _init(self, init: str) -> list[str]:
        c = ckpt.read_checkpoint(init)
        if c.family != self.family:
            raise ckpt.CheckpointError(f"--init {init}: a {c.family!r} checkpoint cannot start a {self.family!r} run")
        return self.tr.init_from(c)

    @property
    def done(self) -> bool:
        return self.tr.step >= self.e.steps

    def step(self) -> None:
        """One iteration: data, the recipe's phases, EMA, then ticks / samples / checkpoints."""
        tr, e, info = self.tr, self.e, self.info
        batch = to_device(next(self.data), info.device)
        self.timer.lap("data")
        self.avg.add(tr.train_step(batch, self.timer))
        self.log.step(tr.step, tr.nimg / 1000)
        if info.is_main:
            for ema in tr.emas.values():
                ema.snapshot(tr.step, tr.nimg, self.run_dir / "phema")
        if e.sample_every > 0 and tr.step % e.sample_every == 0 and info.is_main:
            tr.sample(self.run_dir / "samples")
        if tr.step % e.log_every == 0 or tr.step == e.steps:
            self.tick()
        save = (tr.step % e.checkpoint_every == 0 or tr.step == e.steps) and not any(tr.nonfinite_run.values())
        if info.active and e.consistency_every and (tr.step % e.consistency_every == 0 or save):
            tr.check_consistency()  # never a checkpoint of ranks that drifted apart
        if save:
            tr.save(self.run_dir, self.family)
        self.timer.lap("logging")

    def tick(self) -> None:
        tr = self.tr
        steps = max(tr.step - self.tick_step, 1)
        timing = {k: v / steps for k, v in self.timer.reset().items()}
        merged = self.avg.means()  # already averaged over ranks, step by step
        now = time.perf_counter()
        self.log.tick({
            "step": tr.step, "kimg": tr.nimg / 1000, "time_s": now - self.t0,
            "sec_per_step": (now - self.tick_start) / steps,
            "steps_per_s": (tr.step - self.tick_step) / max(now - self.tick_start, 1e-9), "timing": timing,
            "nonfinite_losses": tr.nonfinite_losses, "nonfinite_grads": tr.nonfinite_grads,
            "lr": {k: o.param_groups[0]["lr"] for k, o in tr.opts.items()}, "stats": merged})
        self.tick_start, self.tick_step = now, tr.step

    def close(self) -> None:
        """Stop this rank's loader workers and logger threads (no communication involved) and
        release the run folder."""
        if self.data is not None:
            self.data.close()
        if self.log is not None:
            self.log.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _kept(run_dir: Path) -> str:
    good = ckpt.list_checkpoints(run_dir)
    return f"the last good checkpoint is {good[-1]}" if good else f"no checkpoint of {run_dir} was written yet"


def _train(recipe_cls: type[Recipe], cfg: Any, resume: str | None, info: DistInfo, init: str | None = None) -> Path:
    run = Run(recipe_cls, cfg, resume, info, init)
    try:
        while not run.done:
            run.step()
    except RankMismatchError as exc:
        raise RankMismatchError(f"training stopped: {exc}; {_kept(run.run_dir)}") from None
    except NonFiniteError as exc:
        raise NonFiniteError(
            f"training stopped: {cfg.engine.max_nonfinite} non-finite losses in a row in {exc}; {_kept(run.run_dir)}. "
            "Lower the learning rate or check the data, then resume with --resume PATH.") from None
    except ckpt.CheckpointError as exc:
        raise ckpt.CheckpointError(f"training stopped at step {run.tr.step}: {exc} ({_kept(run.run_dir)})") from None
    except OSError as exc:  # stats, samples, snapshots: the disk filled up or became read-only
        raise VidgenError(f"training stopped at step {run.tr.step}: cannot write {describe_os_error(exc)}; "
                          f"{_kept(run.run_dir)}. Free space or fix permissions, then resume with "
                          "--resume auto") from None
    finally:
        run.close()
    return run.run_dir
