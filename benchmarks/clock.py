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
        self.cpu_start = self.cpu_stop = 0.0  # process CPU time (all threads), same window
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
            self.cpu_start = time.process_time()
        elif self.steps == self.total_steps:
            self.stop = self._now()
            self.cpu_stop = time.process_time()
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
            "cpu_seconds": self.cpu_stop - self.cpu_start,
            "items": items,
            "unit": self.unit,
            "items_per_s": items / seconds,
            "losses": self.losses,
        }


class BenchClock(L.Callback):
    """A :class:`StepClock` as a Lightning callback; writes its result as JSON to ``out``.

    The clock comes built (its own ``_target_`` config, nested in the callback's), so the callback
    times with the very class and arguments the plain loop's clock gets (:mod:`benchmarks.measure`).
    """

    def __init__(self, out: str, clock: StepClock) -> None:
        super().__init__()
        self.out = Path(out)
        self.clock = clock

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, *_: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.clock.step_end(batch, loss)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.write_text(json.dumps(self.clock.result()))


class FirstBatchProbe(L.Callback):
    """Start-up probe: writes the wall-clock time (``time.time()``) of the first training batch,
    and the process's CPU time so far (``cpu``: user + system seconds of all its threads, which
    other jobs on a shared CPU inflate much less than the wall time)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = Path(out)

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if not self.out.exists():
            self.out.write_text(
                json.dumps({"first_batch": time.time(), "cpu": time.process_time()})
            )


class PhaseTimes(L.Callback):
    """Wall-clock stamps (``time.time()``) of a run's phases, written as JSON to ``out`` after
    each phase: what :mod:`benchmarks.plan` needs to size a run to the time left.

    ``launched`` (given by the caller: when the process was started), ``first_batch`` (the first
    training batch starts: imports, data, model, sanity check and any set-up callback are
    before it), ``warm`` and ``last`` (the end of training step ``warmup_steps`` and of the last
    step, with ``steps``), ``epoch_batches`` (training batches in a whole epoch, whatever
    ``limit_train_batches`` is), ``val_s`` (each validation's seconds, sanity check excluded),
    ``test_s`` with ``test_batches`` run of ``test_batches_total`` in the whole split.
    """

    def __init__(self, out: str, launched: float | None = None, warmup_steps: int = 10) -> None:
        super().__init__()
        self.out = Path(out)
        self.warmup_steps = warmup_steps
        self.times: dict[str, Any] = {"launched": launched, "val_s": [], "steps": 0}
        self._start = 0.0

    def _write(self) -> None:
        self.out.write_text(json.dumps(self.times))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times["epoch_batches"] = len(trainer.train_dataloader)

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self.times.setdefault("first_batch", time.time())

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        self.times["steps"] += 1
        self.times["last"] = time.time()
        if self.times["steps"] == self.warmup_steps:
            self.times["warm"] = self.times["last"]

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.times["val_s"].append(time.time() - self._start)
            self._write()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times["warmup_steps"] = self.warmup_steps
        self._write()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.time()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times["test_s"] = time.time() - self._start
        self.times["test_batches"] = int(sum(trainer.num_test_batches))
        datamodule = trainer.datamodule
        self.times["test_batches_total"] = len(datamodule.test_dataloader()) if datamodule else None
        self._write()
