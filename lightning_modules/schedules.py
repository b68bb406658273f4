"""Learning-rate schedules for every model, as ``_target_`` configs of ``model.scheduler``.

A scheduler config names its class and arguments, plus Lightning's ``interval`` (``step`` or
``epoch``) and ``frequency`` beside them; ``total_steps: null`` means the fit's optimiser steps
(``LitModule.fit_steps``). torch's own schedulers (``StepLR``, ``CosineAnnealingLR``, ...) are
used the same way.
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from litlab.errors import ConfigError
from litlab.ranges import NonNegativeInt, PositiveInt


class WarmupSchedule(LRScheduler):
    """lr(s) = base_lr * min(1, (s + 1) / warmup_steps) * decay(s), stepped every optimiser step.

    ``decay``: ``constant`` (1), ``inverse_sqrt`` (sqrt(warmup_steps / (s + 1)) after the warm-up,
    Vaswani et al. 2017) or ``cosine`` (half a cosine from 1 to 0 between the end of the warm-up and
    ``total_steps``; ``total_steps: null`` in a config = the fit's optimiser steps, see
    ``LitModule.fit_steps``). ``warmup_steps=0`` means no warm-up. Use with ``interval: step``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: NonNegativeInt = 0,
        decay: Literal["constant", "inverse_sqrt", "cosine"] = "constant",
        total_steps: PositiveInt | None = None,
        last_epoch: int = -1,
    ) -> None:
        if decay not in ("constant", "inverse_sqrt", "cosine"):
            raise ConfigError(f"decay={decay!r} is not one of: constant, inverse_sqrt, cosine")
        if decay == "cosine" and not total_steps:
            raise ConfigError("decay=cosine needs total_steps")
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.total_steps = total_steps
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        w = self.warmup_steps
        if w > 0 and step < w:
            return (step + 1) / w
        if self.decay == "inverse_sqrt":
            return math.sqrt(max(w, 1) / (step + 1))
        if self.decay == "cosine":
            progress = min(1.0, (step - w) / max(1, self.total_steps - w))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
