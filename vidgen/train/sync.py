"""Identical ranks: running statistics averaged after each phase, and the consistency check.

Gradients are averaged over ranks (dist.py), so parameters stay identical. Running
statistics (vidgen/nn/stats.py: ``w_avg``, magnitude EMAs, the path-length target) are moved
by each forward pass towards a statistic of the batch it sees; each method's reference does
that per GPU and lets the GPUs drift apart (StyleGAN2/3 skip these buffers in their
consistency check). vidgen keeps them identical with one rule that also makes the result
independent of how the global batch is spread over ranks and accumulation rounds:

    The global batch of a step is cut into ``world_size x accum`` groups (dist.py). In each
    phase every group starts from the same statistics, runs its forward passes (moving them
    as the method does, with the group's own batch), and afterwards every statistic is set
    to its start value plus the mean over all groups of what the groups did to it.

For the running means of these methods (``s <- lerp(s, m, 1 - beta)``, affine in the batch
statistic m) this is exactly one update with the mean of the groups' statistics, i.e. with
the global batch, however many ranks there are. The averaging rides on the all-reduce of
the phase's losses (engine.py), so it costs no extra round trip.

:func:`check_consistency` compares a checksum of every parameter and buffer over the ranks
(``engine.consistency_every``) and stops the run naming the first tensor that differs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from vidgen.errors import VidgenError
from vidgen.nn.stats import running_statistics
from vidgen.train.dist import DistInfo


class RankMismatchError(VidgenError):
    """The ranks of a multi-process run no longer hold the same weights."""


class GroupStatistics:
    """The running statistics of some modules, kept as described in the module docstring.

    Per phase: :meth:`begin`; :meth:`end_group` after each accumulation round (the last one
    included); :meth:`local_delta` gives this rank's mean change to average over ranks, and
    :meth:`apply` sets the averaged result (or :meth:`restore` drops the phase's changes).
    """

    def __init__(self, modules: dict[str, nn.Module]):
        self.named = [(n, b) for key, mod in modules.items() for n, b in running_statistics(mod, f"{key}/")]
        self._start: list[torch.Tensor] = []
        self._delta: torch.Tensor | None = None
        self._groups = 0

    def __len__(self) -> int:
        return len(self.named)

    @property
    def numel(self) -> int:
        return sum(b.numel() for _, b in self.named)

    def begin(self) -> None:
        self._start = [b.detach().clone() for _, b in self.named]
        self._delta, self._groups = None, 0

    def end_group(self, last: bool) -> None:
        """Add what the round just run did to the statistics; unless it was the last round, put
        back the start values for the next one."""
        if not self.named:
            return
        delta = torch.cat([(b.detach() - s).reshape(-1).float() for (_, b), s in zip(self.named, self._start)])
        self._delta = delta if self._delta is None else self._delta + delta
        self._groups += 1
        if not last:
            self.restore()

    def local_delta(self) -> torch.Tensor:
        """This rank's mean change over its rounds, flat float32 ``[numel]``."""
        if self._delta is None:
            return torch.zeros(0)
        return self._delta / self._groups

    def restore(self) -> None:
        with torch.no_grad():
            for (_, b), s in zip(self.named, self._start):
                b.copy_(s)

    def apply(self, mean_delta: torch.Tensor) -> None:
        """statistic = start + ``mean_delta`` (the change averaged over every group)."""
        with torch.no_grad():
            offset = 0
            for (_, b), s in zip(self.named, self._start):
                n = b.numel()
                b.copy_(s + mean_delta[offset:offset + n].view_as(b).to(b.dtype))
                offset += n


# --- consistency ---------------------------------------------------------------------------
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def checksum(t: torch.Tensor) -> torch.Tensor:
    """An int64 checksum of ``t``'s bits: the sum of its elements read as integers. Equal
    tensors give equal sums on any device; any single changed bit changes it."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    flat = t.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(_BITS[flat.element_size()]).sum(dtype=torch.int64)


def state_tensors(state, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every number and tensor in a recipe's ``state_dict`` (nested dicts
    and lists), e.g. ADA's p, so the consistency check covers them too."""
    if isinstance(state, torch.Tensor):
        return [(prefix, state)]
    if isinstance(state, bool) or not isinstance(state, (int, float, dict, list, tuple)):
        return []
    if isinstance(state, (int, float)):
        return [(prefix, torch.tensor(float(state), dtype=torch.float64))]
    items = state.items() if isinstance(state, dict) else enumerate(state)
    return [t for k, v in items for t in state_tensors(v, f"{prefix}.{k}")]


def check_consistency(tensors: list[tuple[str, torch.Tensor]], info: DistInfo, step: int) -> None:
    """Every rank's checksums of ``tensors`` (name, tensor), gathered on every rank; a
    :class:`RankMismatchError` on every rank naming the first tensor (in the given order) on
    which some rank differs from rank 0. A no-op in a single process."""
    if not info.active or not tensors:
        return
    local = torch.stack([checksum(t).to(info.device) for _, t in tensors])
    gathered = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(gathered, local)
    table = torch.stack(gathered).cpu()  # [world, n]
    differs = (table != table[0]).any(dim=0)
    if bool(differs.any()):
        i = int(differs.nonzero()[0])
        ranks = [r for r in range(info.world_size) if table[r, i] != table[0, i]]
        more = int(differs.sum()) - 1
        raise RankMismatchError(
            f"ranks differ at step {step}: {tensors[i][0]!r} on rank{'s' if len(ranks) > 1 else ''} "
            f"{', '.join(map(str, ranks))} is not rank 0's" + (f" (and {more} more tensors)" if more else "")
            + "; a buffer that training changes outside vidgen's running statistics, or a "
            "rank-dependent update, made them drift")
