"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the augmentation
probability p follows the overfitting heuristic r_t = E[sign(D(real))].

Every ``interval`` steps p moves by ``sign(r_t - target) * images / (speed_kimg * 1000)``,
where ``images`` is the number of real images seen since the last update, and is clipped to
[0, p_max]. The state is two JSON-able numbers, checkpointed through the recipe.
"""

from __future__ import annotations

import torch


class AdaController:
    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4,
                 p_init: float = 0.0, p_max: float = 1.0):
        self.target = target
        self.speed_kimg = speed_kimg
        self.interval = interval
        self.p_max = p_max
        self.p = float(p_init)
        self._sign_sum = 0.0
        self._count = 0

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Record the discriminator's logits on (augmented) real images of one batch."""
        self._sign_sum += float(torch.sign(real_logits.detach()).sum())
        self._count += real_logits.numel()

    def step(self, step: int) -> None:
        """Call once per training step; adjusts p every ``interval`` steps."""
        if (step + 1) % self.interval or self._count == 0:
            return
        r_t = self._sign_sum / self._count
        adjust = (1.0 if r_t > self.target else -1.0) * self._count / (self.speed_kimg * 1000.0)
        self.p = min(max(self.p + adjust, 0.0), self.p_max)
        self._sign_sum, self._count = 0.0, 0

    @property
    def r_t(self) -> float:
        return self._sign_sum / self._count if self._count else 0.0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self._sign_sum, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._count = int(state["count"])
