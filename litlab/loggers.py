"""Helpers around Lightning's loggers: the TensorBoard writer and the HPARAMS tab."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

FINAL_PREFIX = "final/"


def tensorboard_writer(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


@rank_zero_only
def log_hparams_with_metrics(
    loggers: Iterable[Logger], hparams: Mapping[str, Any], metrics: Mapping[str, float]
) -> None:
    """Write the run's hyperparameters with its real final metrics (TensorBoard HPARAMS tab).

    Metrics are logged once under ``final/<name>`` so the HPARAMS table shows exactly the values
    the run ended with, never a placeholder; other loggers receive the hyperparameters only.
    """
    final = {f"{FINAL_PREFIX}{name}": float(value) for name, value in metrics.items()}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(hparams), metrics=final)
            logger.save()
        else:
            logger.log_hyperparams(dict(hparams))
