"""Stop at the first NaN or infinite training loss or weight, before anything consumes them.

No checkpoint is kept with weights that are non-finite or whose loss is non-finite, so the "last
good checkpoint" a stopped run names can be evaluated and resumed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from litlab.checkpoints import non_finite_tensor
from litlab.errors import NonFiniteLossError
from litlab.ranges import PositiveInt


class StopOnNonFiniteLoss(Callback):
    """Raise :class:`NonFiniteLossError` (step, epoch, what was non-finite, the last good
    checkpoint) when the training loss or a weight is NaN or infinite.

    The loss test stays on the device: every step folds ``isfinite(loss)`` into a flag, read
    (one host sync) every ``check_every_n_steps`` steps. Before each validation, at each epoch's
    end (before the figure callbacks, which come later in the callback list) and before any
    checkpoint is written, the flag is read and the weights are checked; before a checkpoint the
    loss of the current weights on the last training batch is evaluated too (eval mode, RNG
    untouched). A saved checkpoint of step g is confirmed by the next step's loss, computed with
    its weights on a new batch; when that loss is the first non-finite one, the checkpoint is
    not kept: ``last.ckpt`` is rolled back to the one it replaced (kept as a hard link
    ``.last.ckpt.previous`` at each save, no copy) and a best checkpoint of that step is deleted.
    """

    def __init__(self, check_every_n_steps: PositiveInt = 1) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None  # (step, epoch, loss) of the first bad step
        self._last_batch: Any = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        self._last_batch = batch
        loss = loss.detach().float()
        where = torch.tensor([trainer.global_step, trainer.current_epoch], device=loss.device)
        here = torch.cat([where.float(), loss.view(1)])
        if self._first_bad is None:
            self._first_bad = torch.tensor([-1.0, 0.0, 0.0], device=loss.device)
        unseen_bad = (self._first_bad[0] < 0) & ~torch.isfinite(loss)
        self._first_bad = torch.where(unseen_bad, here, self._first_bad)
        if trainer.global_step % self.check_every_n_steps == 0:
            self.raise_if_bad_loss(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer, pl_module)
        self.probe_loss(trainer, pl_module)
        if trainer.is_global_zero:
            for path in last_paths(trainer):
                keep_previous(path)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The loss flag, then the weights."""
        self.raise_if_bad_loss(trainer)
        bad = non_finite_tensor(dict(pl_module.named_parameters()))
        if bad is not None:
            self.stop(trainer, f"the weight {bad} became non-finite by step {trainer.global_step}")

    @torch.no_grad()
    def probe_loss(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The current weights' loss on the last training batch must be finite."""
        loss_of = getattr(pl_module, "loss", None)
        if self._last_batch is None or loss_of is None or trainer.state.fn != TrainerFn.FITTING:
            return
        was_training = pl_module.training
        pl_module.eval()
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the probe draws no training randomness
            value = loss_of(self._last_batch).detach().float()
        pl_module.train(was_training)
        if not bool(torch.isfinite(value)):
            self.stop(
                trainer,
                f"the weights after step {trainer.global_step} give a non-finite loss "
                f"({float(value)}) on the last training batch",
            )

    def raise_if_bad_loss(self, trainer: L.Trainer) -> None:
        if self._first_bad is None:
            return
        step, epoch, value = self._first_bad.tolist()
        if step >= 0:
            if trainer.is_global_zero:
                drop_checkpoints_of_step(trainer, int(step) - 1)  # their weights gave this loss
            self.stop(trainer, f"the training loss became {value} at step {int(step)}", int(epoch))

    def stop(self, trainer: L.Trainer, what: str, epoch: int | None = None) -> None:
        epoch = trainer.current_epoch if epoch is None else epoch
        kept = last_checkpoint(trainer)
        raise NonFiniteLossError(
            f"{what} (epoch {epoch}); training stopped. Last good checkpoint: "
            f"{kept or 'none saved yet'} (lower the learning rate, or clip gradients with "
            "trainer.gradient_clip_val)"
        )


def last_paths(trainer: L.Trainer) -> list[Path]:
    """The ``last.ckpt`` files the trainer's ModelCheckpoints have written."""
    return [
        Path(callback.last_model_path)
        for callback in trainer.callbacks
        if isinstance(callback, ModelCheckpoint) and callback.last_model_path
        if Path(callback.last_model_path).is_file()
    ]


def previous_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


def keep_previous(path: Path) -> None:
    """Hard-link ``path`` as ``.<name>.previous`` before a new checkpoint replaces it."""
    link = previous_of(path)
    tmp = link.with_name(f"{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.link(path, tmp)
    os.replace(tmp, link)


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` stored in a checkpoint file (memory-mapped, weights only)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def drop_checkpoints_of_step(trainer: L.Trainer, step: int) -> None:
    """Do not keep checkpoints of ``step``: roll ``last.ckpt`` back to its previous version (or
    delete it when it has none) and delete a best checkpoint saved then."""
    for callback in trainer.callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        for attribute in ("last_model_path", "best_model_path"):
            path = Path(getattr(callback, attribute) or "")
            if not path.is_file() or checkpoint_step(path) != step:
                continue
            previous = previous_of(path)
            if attribute == "last_model_path" and previous.is_file():
                os.replace(previous, path)
            else:
                path.unlink()
                setattr(callback, attribute, "")


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
