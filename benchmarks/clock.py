"""One clock for both sides of a comparison: steady-state time of a window of optimiser steps.

The first ``warmup_steps`` steps are not timed (allocator warm-up, first-touch, lazy init). The
window is steps ``warmup_steps + 1 .. warmup_steps + timed_steps``, measured from the end of step
``warmup_steps`` to the end of the last timed step, so it holds every cost of those steps: fetching
and preparing the batch, forward, backward, clipping, the optimiser, logging, callbacks and any
epoch-end work that falls inside it. A window of one epoch's worth of steps always contains exactly
one epoch boundary, hence "time per epoch" without timing the first epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

Batch = Any


def count_images(batch: Batch) -> int:
    """Images in an ``(x, labels)`` batch."""
    return len(batch[0])


def count_tokens(batch: Batch) -> int:
    """Predicted tokens in an ``(inputs, targets)`` language-model batch."""
    return batch[1].numel()


def count_target_tokens(batch: Batch) -> torch.Tensor:
    """Real (non-padding) target tokens of a seq2seq batch; a tensor, so no device sync."""
    return batch["tgt_mask"].sum()


COUNTERS: dict[str, Callable[[Batch], int | torch.Tensor]] = {
    "images": count_images,
    "tokens": count_tokens,
    "target tokens": count_target_tokens,
}


class StepClock:
    """Times a window of optimiser steps and counts the items (images, tokens) trained in it.

    Call :meth:`step_end` after every optimiser step. ``record_losses`` keeps every step's loss
    (a device sync per step: for tests, not for timing).
    """

    def __init__(
        self,
        warmup_steps: int,
        timed_steps: int,
        unit: str,
        device: str = "cpu",
        record_losses: bool = False,
    ) -> None:
        if warmup_steps < 1 or timed_steps < 1:
            raise ValueError("warmup_steps and timed_steps must be >= 1")
        self.warmup_steps, self.timed_steps = warmup_steps, timed_steps
        self.unit, self.count = unit, COUNTERS[unit]
        self.cuda = torch.device(device).type == "cuda"
        self.record_losses = record_losses
        self.steps = 0
        self.items: int | torch.Tensor = 0
        self.start = self.stop = 0.0
        self.losses: list[float] = []

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.timed_steps

    @property
    def done(self) -> bool:
        return self.steps >= self.total_steps

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def step_end(self, batch: Batch, loss: torch.Tensor) -> None:
        """Record one finished optimiser step on ``batch`` whose loss was ``loss``."""
        self.steps += 1
        if self.warmup_steps < self.steps <= self.total_steps:
            self.items = self.items + self.count(batch)
        if self.steps == self.warmup_steps:
            self.start = self._now()
        elif self.steps == self.total_steps:
            self.stop = self._now()
        if self.record_losses:
            self.losses.append(float(loss))

    def result(self) -> dict[str, Any]:
        """Seconds and items of the timed window (and the losses when recorded)."""
        if not self.done:
            raise RuntimeError(f"only {self.steps} of {self.total_steps} steps ran")
        seconds = self.stop - self.start
        items = int(self.items)
        return {
            "steps": self.steps,
            "timed_steps": self.timed_steps,
            "seconds": seconds,
            "items": items,
            "unit": self.unit,
            "items_per_s": items / seconds,
            "losses": self.losses,
        }


class BenchClock(L.Callback):
    """:class:`StepClock` as a Lightning callback; writes its result as JSON to ``out``."""

    def __init__(
        self,
        out: str,
        warmup_steps: int,
        timed_steps: int,
        unit: str,
        device: str = "cpu",
        record_losses: bool = False,
    ) -> None:
        super().__init__()
        self.out = Path(out)
        self.clock = StepClock(warmup_steps, timed_steps, unit, device, record_losses)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, *_: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.clock.step_end(batch, loss)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.write_text(json.dumps(self.clock.result()))


class FirstBatchProbe(L.Callback):
    """Start-up probe: writes the wall-clock time (``time.time()``) of the first training batch."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = Path(out)

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if not self.out.exists():
            self.out.write_text(json.dumps({"first_batch": time.time()}))
