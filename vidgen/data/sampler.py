"""Infinite, seeded, resumable sampler with disjoint shards for DDP ranks.

The global stream is the concatenation of epochs; epoch e is a permutation of
range(dataset_len) drawn from a generator seeded by (seed, e) (identity when not shuffling).
Rank r of W yields global positions start + r, start + r + W, start + r + 2W, ..., so within
any W consecutive positions every rank gets exactly one, the ranks never share a position,
and together they cover every epoch exactly once. Resuming from a global sample count gives
the identical continuation.
"""

from __future__ import annotations

import numpy as np
import torch

from vidgen.errors import VidgenError


class InfiniteSampler(torch.utils.data.Sampler):
    """``start`` is the number of samples already consumed by ALL ranks together
    (per-rank steps x batch x world_size); state_dict() records what this sampler yielded.
    A DataLoader prefetches ahead of training, so a trainer should save the count of samples
    it actually consumed and pass it as ``start`` (or load_state_dict) when resuming."""

    def __init__(self, dataset_len: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start: int = 0):
        assert dataset_len > 0, "empty dataset"
        assert 0 <= rank < world_size, f"rank {rank} not in 0..{world_size - 1}"
        assert start >= 0
        self.dataset_len, self.seed, self.rank, self.world_size = dataset_len, seed, rank, world_size
        self.shuffle = shuffle
        self.position = start  # global position of the next sample of rank 0's row
        self._epoch, self._perm = None, None

    def _order(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            if self.shuffle:
                rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
                self._perm = rng.permutation(self.dataset_len)
            else:
                self._perm = np.arange(self.dataset_len)
            self._epoch = epoch
        return self._perm

    def index_at(self, position: int) -> int:
        """Dataset index at a global stream position."""
        epoch, offset = divmod(position, self.dataset_len)
        return int(self._order(epoch)[offset])

    def __iter__(self):
        while True:
            idx = self.index_at(self.position + self.rank)
            self.position += self.world_size
            yield idx

    def __len__(self) -> int:  # nominal: one epoch's share of this rank
        return -(-self.dataset_len // self.world_size)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "samples": self.position, "dataset_len": self.dataset_len,
                "world_size": self.world_size, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        if state["dataset_len"] != self.dataset_len or state["seed"] != self.seed \
                or state.get("shuffle", True) != self.shuffle:
            raise VidgenError(f"sampler state {state} does not match this dataset/seed "
                             f"(len {self.dataset_len}, seed {self.seed})")
        self.position = int(state["samples"])
