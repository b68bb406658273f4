"""Training / validation curves of any logged scalar, drawn at the end of fitting."""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
import torch

from litlab.callbacks.figures import FigureCallback
from litlab.files import write_csv
from litlab.plotting import plot_curves, series_to_rows


class MetricCurves(FigureCallback):
    """Records epoch-level ``metrics``; writes ``loss_curves.{png,csv}`` at the end of fitting.

    A metric is recorded only when it was logged: ``val/...`` metrics when a validation run
    ends (so they follow ``check_val_every_n_epoch``; Lightning's ``callback_metrics`` keeps
    the last validation value through the epochs without one), the others when a training
    epoch ends. The x value is the 1-based epoch.
    """

    def __init__(self, dirpath: str | os.PathLike, metrics: Sequence[str],
                 filename: str = "loss_curves") -> None:  # fmt: skip
        super().__init__(dirpath)
        self.metrics = list(metrics)
        self.filename = filename
        self.history: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in metrics}

    @property
    def state_key(self) -> str:
        """One state per output file, so several instances can share a Trainer."""
        return self._generate_state_key(filename=self.filename)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, validation=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, validation=False)

    def _record(self, trainer: L.Trainer, validation: bool) -> None:
        """Append the current value of each metric of the stage (``val/`` or not)."""
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if name.startswith("val/") == validation and isinstance(value, torch.Tensor):
                xs, ys = self.history[name]
                xs.append(trainer.current_epoch + 1)
                ys.append(float(value))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        series = {name: xy for name, xy in self.history.items() if xy[0]}
        if not series or not trainer.is_global_zero:
            return
        write_csv(self.dirpath / f"{self.filename}.csv", ["metric", "epoch", "value"],
                  series_to_rows(series))  # fmt: skip
        fig = plot_curves(series, "epoch", "value", title=", ".join(series))
        self.log_figure(trainer, f"figures/{self.filename}", fig, f"{self.filename}.png")

    def state_dict(self) -> dict:
        return {"history": {name: [list(xs), list(ys)] for name, (xs, ys) in self.history.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        for name, (xs, ys) in state_dict.get("history", {}).items():
            self.history[name] = (list(xs), list(ys))
