"""Stop at the first NaN or infinite training loss, before a checkpoint can keep bad weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from litlab.errors import NonFiniteLossError


class StopOnNonFiniteLoss(Callback):
    """Raise :class:`NonFiniteLossError` (step, value, last good checkpoint) when the loss is
    NaN or infinite.

    The test is kept on the device: every step folds ``isfinite(loss)`` into a flag, and the flag
    is read (one host sync) every ``check_every_n_steps`` steps and before any checkpoint is
    written, so no checkpoint ever holds weights updated by a non-finite loss.
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None  # (step, epoch, loss) of the first bad step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float()
        where = torch.tensor([trainer.global_step, trainer.current_epoch], device=loss.device)
        here = torch.cat([where.float(), loss.view(1)])
        if self._first_bad is None:
            self._first_bad = torch.tensor([-1.0, 0.0, 0.0], device=loss.device)
        unseen_bad = (self._first_bad[0] < 0) & ~torch.isfinite(loss)
        self._first_bad = torch.where(unseen_bad, here, self._first_bad)
        if trainer.global_step % self.check_every_n_steps == 0:
            self.raise_if_bad(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.raise_if_bad(trainer)

    def raise_if_bad(self, trainer: L.Trainer) -> None:
        if self._first_bad is None:
            return
        step, epoch, value = self._first_bad.tolist()
        if step < 0:
            return
        kept = last_checkpoint(trainer)
        raise NonFiniteLossError(
            f"the training loss became {value} at step {int(step)} (epoch {int(epoch)}); "
            f"training stopped. Last good checkpoint: {kept or 'none saved yet'} "
            "(lower the learning rate, or clip gradients with trainer.gradient_clip_val)"
        )


def last_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint file any ModelCheckpoint of the trainer has written, or None."""
    paths = [
        Path(path)
        for callback in trainer.callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path)
        if path and Path(path).is_file()
    ]
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None
