"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the augmentation
probability p follows the overfitting heuristic r_t = E[sign(D(real))].

Every ``interval`` steps p moves by ``sign(r_t - target) * images / (speed_kimg * 1000)``,
where ``images`` is the number of real images seen since the last update, and is clipped to
[0, p_max]. The state is two JSON-able numbers, checkpointed through the recipe.

Under DDP every rank calls :meth:`AdaController.step` once per step; the signs and counts
accumulated on each rank since the previous step are summed over ranks there (one
all-reduce of two numbers), so r_t covers the global batch and every rank holds the same p
and the same state, whichever rank's checkpoint is read.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class AdaController:
    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4,
                 p_init: float = 0.0, p_max: float = 1.0):
        self.target = target
        self.speed_kimg = speed_kimg
        self.interval = interval
        self.p_max = p_max
        self.p = float(p_init)
        self._sign_sum = 0.0  # since the last update of p, all ranks
        self._count = 0
        self._local = [0.0, 0]  # this rank, since the last step()

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record the discriminator's logits on (augmented) real images of one batch."""
        self._local[0] += float(torch.sign(real_logits.detach()).sum())
        self._local[1] += real_logits.numel()

    def _merge(self) -> None:
        total = list(self._local)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            t = torch.tensor(total, dtype=torch.float64, device=device)
            dist.all_reduce(t)
            total = t.tolist()
        self._sign_sum += total[0]
        self._count += int(round(total[1]))
        self._local = [0.0, 0]

    def step(self, step: int) -> None:
        """Call once per training step on every rank; adjusts p every ``interval`` steps."""
        self._merge()
        if (step + 1) % self.interval or self._count == 0:
            return
        r_t = self._sign_sum / self._count
        adjust = (1.0 if r_t > self.target else -1.0) * self._count / (self.speed_kimg * 1000.0)
        self.p = min(max(self.p + adjust, 0.0), self.p_max)
        self._sign_sum, self._count = 0.0, 0

    @property
    def r_t(self) -> float:
        """Mean sign since the last update of p (this rank's not yet merged part included)."""
        n = self._count + self._local[1]
        return (self._sign_sum + self._local[0]) / n if n else 0.0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self._sign_sum + self._local[0], "count": self._count + self._local[1]}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._count = int(state["count"])
        self._local = [0.0, 0]
