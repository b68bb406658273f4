"""The epoch timer: one time per training epoch, stopped where the epoch's training ends."""

from __future__ import annotations

import time

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from litlab.callbacks.timing import EpochTimer

SLEEP_S = 0.1


class SlowLastBatches(L.Callback):
    """Sleeps after the training batches that follow the epoch's mid-epoch validation."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx >= 2:
            time.sleep(SLEEP_S)


@pytest.mark.parametrize("val_check_interval", [1.0, 0.5])
def test_epoch_time_covers_the_whole_epoch(val_check_interval: float) -> None:
    """4 batches per epoch, 2 epochs: two epoch times, each including the 2 slow batches that
    come after a mid-epoch validation (which must not stop the clock)."""
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, limit_train_batches=4, limit_val_batches=1,
        val_check_interval=val_check_interval, callbacks=[timer, SlowLastBatches()],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(BoringModel())
    assert len(timer.epoch_seconds) == 2
    assert min(timer.epoch_seconds) >= 2 * SLEEP_S
