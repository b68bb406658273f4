"""Random-number generator states in checkpoints, so a resumed run draws what the original did.

Lightning's checkpoints restore weights, optimiser, scheduler and loop counters, not the RNGs
that draw dropout masks, reparameterisation noise or binarisation. This callback stores the
global torch (CPU and CUDA), Python and NumPy states in each checkpoint and puts them back just
before the first training batch after a restart, after Lightning's own set-up has run.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def capture_rng() -> dict[str, Any]:
    """The global RNG states as tensors and plain lists (loadable with ``weights_only=True``)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
    }


def restore_rng(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class RNGState(Callback):
    """Save the RNG states with every checkpoint; restore them when training resumes."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the sanity check and the train loader's set-up, before the first batch is
        # transferred (a restart mid-epoch calls no on_train_epoch_start)
        if self._pending is not None:
            restore_rng(self._pending)
            self._pending = None
