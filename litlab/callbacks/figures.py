"""Base for callbacks that draw figures: PNG in the run folder + image in every logger that
stores images (TensorBoard, MLflow, W&B: :func:`litlab.loggers.log_image`)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure

from litlab.loggers import as_image, log_image
from litlab.plotting import save_figure, save_grid


class FigureCallback(L.Callback):
    """Saves figures under ``dirpath`` and logs them to the loggers, on global rank 0 only."""

    def __init__(self, dirpath: str | os.PathLike) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)

    @rank_zero_only
    def log_grid(self, trainer: L.Trainer, tag: str, images: torch.Tensor, nrow: int,
                 filename: str | None = None) -> None:  # fmt: skip
        """Tile images into a grid; log it as ``tag``; save it as ``filename`` if given."""
        path = self.dirpath / (filename or ".last_grid.png")
        grid = save_grid(images, path, nrow=nrow)
        if filename is None:
            path.unlink(missing_ok=True)
        log_image(trainer, tag, as_image(grid), trainer.global_step)

    @rank_zero_only
    def log_figure(self, trainer: L.Trainer, tag: str, fig: Figure, filename: str) -> None:
        """Save a matplotlib figure as ``filename`` and log it as ``tag``."""
        if trainer.loggers:
            fig.canvas.draw()
            rgba = np.asarray(fig.canvas.buffer_rgba())
            log_image(trainer, tag, rgba[..., :3].copy(), trainer.global_step)
        save_figure(fig, self.dirpath / filename)
