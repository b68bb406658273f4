"""Wall-clock timing of training epochs and of the whole fit, logged like any metric."""

from __future__ import annotations

import time

import lightning as L


class EpochTimer(L.Callback):
    """Logs ``time/epoch_s`` (training epoch, validation excluded; mean over DDP ranks) and
    ``time/fit_s``.

    An epoch's clock stops at the validation that follows its last batch, or at its end when none
    does; validations inside the epoch (``trainer.val_check_interval`` < 1) run on its clock.
    """

    def __init__(self) -> None:
        super().__init__()
        self._epoch_start = self._fit_start = 0.0
        self.epoch_seconds: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a validation inside the epoch (trainer.val_check_interval < 1) does not end it
        if not trainer.sanity_checking and trainer.is_last_batch and self._epoch_start:
            self._record(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start:  # no validation ran this epoch
            self._record(pl_module)

    def _record(self, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._epoch_start
        self._epoch_start = 0.0
        self.epoch_seconds.append(seconds)
        pl_module.log("time/epoch_s", seconds, on_step=False, on_epoch=True, sync_dist=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._fit_start
        for logger in trainer.loggers:
            logger.log_metrics({"time/fit_s": seconds}, step=trainer.global_step)
