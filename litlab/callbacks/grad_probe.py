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

When the module also names its residual blocks (``probe_blocks()``: modules with ``attn`` and
``mlp`` sub-layers, input and output the residual stream ``x_l -> x_{l+1}``), the same batches
measure the forward signal of every layer l (:class:`SignalProbe`), written to
``<dirpath>/signal.csv`` (``phase, step, name, layer, value``; TensorBoard ``signal_init/<name>/<l>``,
``signal/<name>/<l>``):

* ``attn_ratio``, ``mlp_ratio``: rms(sub-layer output) / rms(x_l), what a branch adds against the
  stream it enters (for pre-LN's MLP the stream is x_l + attention, so it is approximate);
* ``carry``: mean over tokens of cos(x_l, x_{l+1}), how much of a token's vector survives the layer;
* ``token_cos``: mean over pairs of positions t != s of one sequence of cos(x_{l+1}[t], x_{l+1}[s]):
  1 when every position carries the same vector (rank collapse: the next-token prediction can no
  longer depend on the input).
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
SIGNAL_HEADER = ("phase", "step", "name", "layer", "value")


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


def rms(x: torch.Tensor) -> torch.Tensor:
    """sqrt(mean(x^2)) over every element."""
    return x.float().pow(2).mean().sqrt()


def mean_pairwise_cosine(h: torch.Tensor) -> torch.Tensor:
    """Mean over sequences and pairs t != s of cos(h[b, t], h[b, s]), ``h`` ``(B, T, d)``:
    with unit vectors u_t, ||sum_t u_t||^2 = T + sum_{t != s} u_t . u_s."""
    units = torch.nn.functional.normalize(h.float(), dim=-1)
    length = units.shape[1]
    if length < 2:
        return torch.tensor(float("nan"))
    total = units.sum(dim=1).pow(2).sum(dim=-1)
    return ((total - length) / (length * (length - 1))).mean()


class SignalProbe:
    """Forward hooks on residual blocks; while :attr:`active`, each block's forward adds its
    ``attn_ratio``, ``mlp_ratio``, ``carry`` and ``token_cos`` (module docstring) to running sums.
    """

    def __init__(self, blocks: list[nn.Module]) -> None:
        self.active = False
        self.sums: dict[tuple[str, int], float] = {}
        self.counts: dict[int, int] = {}  # forwards measured per layer (each adds all 4 values)
        self._branch: dict[str, torch.Tensor] = {}
        self.handles = []
        for layer, block in enumerate(blocks):
            for branch in ("attn", "mlp"):
                self.handles.append(getattr(block, branch).register_forward_hook(
                    self._branch_hook(branch)))  # fmt: skip
            self.handles.append(block.register_forward_hook(self._block_hook(layer)))

    def _branch_hook(self, branch: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if self.active:
                self._branch[branch] = rms(output.detach())

        return hook

    def _block_hook(self, layer: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not self.active:
                return
            x_in, x_out = inputs[0].detach().float(), output.detach().float()
            scale = rms(x_in)
            values = {
                "attn_ratio": self._branch.pop("attn") / scale,
                "mlp_ratio": self._branch.pop("mlp") / scale,
                "carry": torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1).mean(),
                "token_cos": mean_pairwise_cosine(x_out),
            }
            for name, value in values.items():
                self.sums[(name, layer)] = self.sums.get((name, layer), 0.0) + float(value)
            self.counts[layer] = self.counts.get(layer, 0) + 1

        return hook

    def take(self) -> dict[tuple[str, int], float]:
        """The means since the last call, ``{(name, layer): value}``; the sums restart."""
        means = {(name, layer): total / self.counts[layer]
                 for (name, layer), total in self.sums.items()}  # fmt: skip
        self.sums, self.counts = {}, {}
        return means

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class GradProbe(L.Callback):
    """Gradient norms at initialisation (averaged over batches) and every N training steps.

    The LightningModule must provide ``probe_parameters() -> {name: parameter}`` and
    ``loss(batch) -> scalar``; with ``probe_blocks() -> [block]`` the forward signal is measured
    too (:class:`SignalProbe`).
    """

    def __init__(
        self,
        dirpath: str | os.PathLike,
        init_batches: NonNegativeInt = 8,
        every_n_steps: PositiveInt = 50,
        seed: Seed = 0,
        filename: str = "grad_norms.csv",
        signal_filename: str = "signal.csv",
    ) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.init_batches = init_batches
        self.every_n_steps = every_n_steps
        self.seed = seed
        self.filename = filename
        self.signal_filename = signal_filename
        self.rows: list[tuple] = []
        self.signal_rows: list[tuple] = []
        self.init_norms: dict[str, float] = {}
        self.signal: SignalProbe | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.signal is None and hasattr(pl_module, "probe_blocks"):
            self.signal = SignalProbe(list(pl_module.probe_blocks()))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.signal is not None:
            self.signal.remove()
            self.signal = None

    # -- at initialisation -------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.init_batches <= 0 or trainer.global_step > 0:  # resumed runs are not at init
            return
        if self.signal is not None:
            self.signal.active = True
        self.init_norms = self.measure_at_init(trainer, pl_module)
        for name, value in self.init_norms.items():
            self._record(trainer, "init", 0, name, value)
        self._record_signal(trainer, "init", 0)
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
    def _due(self, step: int) -> bool:
        return self.every_n_steps > 0 and step % self.every_n_steps == 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.signal is not None:
            self.signal.active = self._due(trainer.global_step)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if not self._due(step):
            return
        for name, value in grad_norms(pl_module.probe_parameters()).items():
            self._record(trainer, "train", step, name, value)
        self._record_signal(trainer, "train", step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    # -- output ----------------------------------------------------------------------------------
    def _record(self, trainer: L.Trainer, phase: str, step: int, name: str, value: float) -> None:
        kind, layer = split_name(name)
        self.rows.append((phase, step, kind, layer, value))
        if trainer.is_global_zero:
            tag = "grad_norm_init" if phase == "init" else "grad_norm"
            log_scalars(trainer, {f"{tag}/{name}": value}, step)

    def _record_signal(self, trainer: L.Trainer, phase: str, step: int) -> None:
        """The signal probe's means since its last reading, then it stops measuring."""
        if self.signal is None:
            return
        self.signal.active = False
        means = self.signal.take()
        for (name, layer), value in sorted(means.items(), key=lambda item: item[0][::-1]):
            self.signal_rows.append((phase, step, name, layer, value))
        if trainer.is_global_zero and means:
            tag = "signal_init" if phase == "init" else "signal"
            log_scalars(trainer, {f"{tag}/{n}/{i}": v for (n, i), v in means.items()}, step)

    @rank_zero_only
    def _write(self, trainer: L.Trainer) -> None:
        write_csv(self.dirpath / self.filename, CSV_HEADER, self.rows)
        if self.signal_rows:
            write_csv(self.dirpath / self.signal_filename, SIGNAL_HEADER, self.signal_rows)

    def state_dict(self) -> dict:
        return {"rows": [list(row) for row in self.rows],
                "signal_rows": [list(row) for row in self.signal_rows]}  # fmt: skip

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [tuple(row) for row in state_dict.get("rows", [])]
        self.signal_rows = [tuple(row) for row in state_dict.get("signal_rows", [])]
