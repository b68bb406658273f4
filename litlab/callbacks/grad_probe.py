"""Gradient-norm probe for the LayerNorm-placement study (report Q15-17, Xiong et al. 2020).

Records ||dL/dW||_F for the weights the module names in ``probe_parameters()`` (for the
Transformer LM: the embedding, and per layer the attention output W^O and the FFN W_1, W_2):

* at initialisation: before the first update, the mean over ``init_batches`` training batches of
  each batch's gradient norm (gradients are zeroed between batches and afterwards). The batches
  are drawn, and dropout sampled, under a fixed seed (``seed``) in a forked RNG, so every job of a
  sweep sees the same batches and training continues exactly as without the probe;
* during training: every ``every_n_steps`` optimiser steps, in ``on_before_optimizer_step``
  (after AMP unscaling, before gradient clipping), on the batch of that step.

Each value goes to TensorBoard (``grad_norm_init/<name>``, ``grad_norm/<name>``) and to
``<dirpath>/grad_norms.csv`` with columns ``phase, step, name, layer, norm``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from litlab.files import write_csv
from litlab.loggers import log_scalars
from litlab.ranges import NonNegativeInt, PositiveInt, Seed

CSV_HEADER = ("phase", "step", "name", "layer", "norm")


def grad_norms(params: dict[str, nn.Parameter]) -> dict[str, float]:
    """Frobenius norm of each parameter's ``.grad`` (parameters without a gradient are skipped)."""
    return {
        name: float(p.grad.detach().float().norm())
        for name, p in params.items()
        if p.grad is not None
    }


def split_name(name: str) -> tuple[str, int | str]:
    """``"ffn_out/3"`` -> ``("ffn_out", 3)``; ``"embedding"`` -> ``("embedding", "")``."""
    kind, _, layer = name.partition("/")
    return kind, int(layer) if layer.isdigit() else layer


class GradProbe(L.Callback):
    """Gradient norms at initialisation (averaged over batches) and every N training steps.

    The LightningModule must provide ``probe_parameters() -> {name: parameter}`` and
    ``loss(batch) -> scalar``.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        init_batches: NonNegativeInt = 8,
        every_n_steps: PositiveInt = 50,
        seed: Seed = 0,
        filename: str = "grad_norms.csv",
    ) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.init_batches = init_batches
        self.every_n_steps = every_n_steps
        self.seed = seed
        self.filename = filename
        self.rows: list[tuple] = []
        self.init_norms: dict[str, float] = {}

    # -- at initialisation -------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.init_batches <= 0 or trainer.global_step > 0:  # resumed runs are not at init
            return
        self.init_norms = self.measure_at_init(trainer, pl_module)
        for name, value in self.init_norms.items():
            self._record(trainer, "init", 0, name, value)
        self._write(trainer)

    def _init_batches(self, trainer: L.Trainer) -> Iterator:
        datamodule = trainer.datamodule
        loader = (
            datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
        )
        return islice(iter(loader), self.init_batches)

    def measure_at_init(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Mean over ``init_batches`` batches of each probed weight's gradient norm; no update."""
        params = pl_module.probe_parameters()
        sums: dict[str, float] = {}
        count = 0
        devices = [pl_module.device] if pl_module.device.type == "cuda" else []
        was_training = pl_module.training
        pl_module.train()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for batch in self._init_batches(trainer):
                batch = trainer.strategy.batch_to_device(batch)
                pl_module.zero_grad(set_to_none=True)
                with trainer.precision_plugin.forward_context():  # e.g. bf16 autocast, as training
                    loss = pl_module.loss(batch)
                loss.backward()
                for name, value in grad_norms(params).items():
                    sums[name] = sums.get(name, 0.0) + value
                count += 1
        pl_module.zero_grad(set_to_none=True)
        pl_module.train(was_training)
        if count == 0:
            raise RuntimeError("GradProbe: the training loader gave no batch to measure at init")
        return {name: total / count for name, total in sums.items()}

    # -- during training -----------------------------------------------------------------------
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step % self.every_n_steps:
            return
        for name, value in grad_norms(pl_module.probe_parameters()).items():
            self._record(trainer, "train", step, name, value)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    # -- output ----------------------------------------------------------------------------------
    def _record(self, trainer: L.Trainer, phase: str, step: int, name: str, value: float) -> None:
        kind, layer = split_name(name)
        self.rows.append((phase, step, kind, layer, value))
        if trainer.is_global_zero:
            tag = "grad_norm_init" if phase == "init" else "grad_norm"
            log_scalars(trainer, {f"{tag}/{name}": value}, step)

    @rank_zero_only
    def _write(self, trainer: L.Trainer) -> None:
        write_csv(self.dirpath / self.filename, CSV_HEADER, self.rows)

    def state_dict(self) -> dict:
        return {"rows": [list(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [tuple(row) for row in state_dict.get("rows", [])]
