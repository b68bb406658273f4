"""Progress of the VAE's test phase, counted in latent samples rather than batches.

A VAE's test step scores each batch of test images with two estimators of log p(x): K importance
samples and L naive prior samples per image (``model.nll_num_samples``, ``model.naive_num_samples``,
drawn ``model.nll_chunk_size`` at a time). With ``make train``'s defaults that is 10 batches of
1,000 images x (500 + 500) samples: on a CPU tens of seconds per batch, during which a bar that
counts batches does not move. :class:`EstimatorProgress` listens to the estimators' chunks
(``VAE.chunk_listener``) and shows how far the phase is: in the test progress bar's postfix when
the bar is on, else as a log line at most every ``log_every_s`` seconds; one line at the end says
what was computed and how long it took. It only reads counts: the estimates are the same with or
without it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from litlab.ranges import PositiveFloat

log = logging.getLogger(__name__)


def clock(seconds: float) -> str:
    """``83.4`` -> ``"1:23"``; hours as ``"1:02:03"``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class EstimatorProgress(L.Callback):
    """Reports the test phase's log p(x) estimators chunk by chunk (models with a
    ``chunk_listener`` attribute, i.e. the VAE; a no-op for the others)."""

    def __init__(self, log_every_s: PositiveFloat = 30.0) -> None:
        super().__init__()
        self.log_every_s = log_every_s
        self.total = self.done = 0
        self.batches = self.batch = 0
        self.samples: dict[str, int] = {}
        self._name, self._last = "", 0
        self._start = self._logged = 0.0
        self._trainer: L.Trainer | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.total = 0
        if not hasattr(pl_module, "chunk_listener"):
            return
        hp = pl_module.hparams
        self.samples = {"nll_is": hp.nll_num_samples, "nll_naive": hp.naive_num_samples}
        batches = sum(trainer.num_test_batches)
        if not math.isfinite(batches) or sum(self.samples.values()) == 0:
            return
        self.batches, self.batch, self.done = int(batches), 0, 0
        self.total = self.batches * sum(self.samples.values())
        self._start = self._logged = time.perf_counter()
        self._trainer = trainer
        pl_module.chunk_listener = self.on_chunk

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self.batch += 1
        self._name, self._last = "", 0

    def on_chunk(self, name: str, done: int, num_samples: int) -> None:
        """``done`` of the ``num_samples`` samples of estimator ``name`` are drawn, this batch."""
        if name != self._name:
            self._name, self._last = name, 0
        self.done += done - self._last
        self._last = done
        trainer = self._trainer
        if trainer is None or not trainer.is_global_zero:
            return
        now = time.perf_counter()
        elapsed = now - self._start
        fraction = self.done / self.total
        left = elapsed * (1 - fraction) / fraction
        text = (f"log p(x) {fraction:.0%}: batch {self.batch}/{self.batches}, {name} "
                f"{done}/{num_samples} samples, {clock(elapsed)} elapsed, ~{clock(left)} left")  # fmt: skip
        bar = trainer.progress_bar_callback
        if isinstance(bar, TQDMProgressBar) and bar.is_enabled and bar._test_progress_bar:
            bar.test_progress_bar.set_postfix_str(text, refresh=True)
        elif now - self._logged >= self.log_every_s:
            self._logged = now
            log.info("Test: %s", text)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.total:
            return
        pl_module.chunk_listener = None
        self._trainer = None
        if trainer.is_global_zero:
            log.info(
                "Test: log p(x) of %d batch(es) with %d importance + %d naive samples per image, "
                "%d at a time: %s",
                self.batches, self.samples["nll_is"], self.samples["nll_naive"],
                pl_module.hparams.nll_chunk_size, clock(time.perf_counter() - self._start),
            )  # fmt: skip
