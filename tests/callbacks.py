"""Test-only callbacks, added on the command line with ``+callbacks.<name>._target_=...``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class PauseAtStep(Callback):
    """At optimiser step ``step``, write ``marker`` and sleep, so a test can kill the process
    at a known point (after some checkpoints, with unsaved work since the last one)."""

    def __init__(self, step: int, marker: str, seconds: float = 600.0) -> None:
        self.step, self.marker, self.seconds = step, Path(marker), seconds

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(self.seconds)


class PauseOnceInJob(PauseAtStep):
    """:class:`PauseAtStep` in multirun job ``job`` only, and only while ``marker`` does not
    exist: the same command line, run again, goes through (the sweep-resume test kills a sweep
    in one job, then re-runs the identical command)."""

    def __init__(self, job: int, step: int, marker: str, seconds: float = 600.0) -> None:
        super().__init__(step, marker, seconds)
        self.job = job
        self.armed = not self.marker.exists()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        if self.armed and HydraConfig.get().job.num == self.job:
            super().on_train_batch_end(trainer, *args, **kwargs)


class StepLog(Callback):
    """Append ``<job num> <global step>`` to ``path`` at the start of every training batch: which
    optimiser steps each job of a sweep trained (a resumed job starts at its checkpoint's step)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        with self.path.open("a") as handle:
            handle.write(f"{HydraConfig.get().job.num} {trainer.global_step}\n")


class PoisonWeights(Callback):
    """Before the training batch of optimiser step ``step`` (0-based), scale every weight by
    ``factor``: that step's loss is the first non-finite one, computed with weights that a
    checkpoint of the previous step holds unscaled (tests the NaN guard's roll-back)."""

    def __init__(self, step: int, factor: float = 1e20) -> None:
        self.step, self.factor = step, factor

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.mul_(self.factor)
