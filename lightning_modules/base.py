"""What every litlab LightningModule shares: nets, optimiser and scheduler built from configs.

Sub-modules, optimiser and scheduler arrive as plain ``_target_`` dictionaries (not objects) and
are stored as hyperparameters, so a checkpoint rebuilds its model with no extra arguments:
``VAE.load_from_checkpoint(path)``. The stored hyperparameters are plain Python containers, which
``torch.load(weights_only=True)`` accepts.

The GPU fast path lives here too, once for every model:

* ``compile``: ``torch.compile`` each net in place (``nn.Module.compile``) when a Trainer sets the
  model up, so state-dict keys never gain an ``_orig_mod.`` prefix and a compiled run's checkpoint
  loads into an uncompiled model;
* fused optimiser: on CUDA, an optimiser that has a fused kernel (Adam, AdamW, SGD, ...) gets
  ``fused=True`` unless its config says otherwise (:func:`with_fused`);
* :func:`running_mean`: epoch means without torchmetrics' per-update NaN check, which is a
  host-device sync (``if nans.any()``) in every training step.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric

from litlab.checkpoints import load_checkpoint
from litlab.errors import ConfigError
from litlab.safety import check_targets, with_current_targets


def plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build(config: Mapping[str, Any], **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` config (a plain mapping or an OmegaConf node); targets that
    moved since an older checkpoint was written are renamed first (``litlab.safety.RENAMED``)."""
    return instantiate(OmegaConf.create(with_current_targets(plain(config))), **kwargs)


def compile_options(compile: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``model.compile`` -> keyword arguments of ``torch.compile``, or None when off.

    ``false``/``null``: off; ``true``: the defaults (inductor); a mapping: those arguments, e.g.
    ``{backend: aot_eager}`` or ``{mode: max-autotune}`` (``enabled: false`` in it turns it off).
    """
    if not compile:
        return None
    if compile is True:
        return {}
    options = dict(plain(compile))
    return options if options.pop("enabled", True) else None


def with_fused(
    config: Mapping[str, Any], device: torch.device, clips_gradients: bool = False
) -> dict[str, Any]:
    """The optimiser config, with ``fused=True`` added on CUDA when the optimiser supports it.

    Fused kernels update every parameter in one launch (no per-tensor loop, no host sync). A
    config that sets ``fused`` or ``foreach`` itself is left as it is; off CUDA nothing is added
    (set ``model.optimizer.fused=true`` to ask for a CPU fused kernel explicitly). Nor is it added
    when the trainer clips gradients: Lightning refuses to clip for an optimiser that unscales
    gradients inside its step, which fused ones do.
    """
    config = dict(config)
    if device.type != "cuda" or clips_gradients or "fused" in config or config.get("foreach"):
        return config
    signature = inspect.signature(get_class(config["_target_"]).__init__)
    if "fused" in signature.parameters:
        config["fused"] = True
    return config


class RunningMean(MeanMetric):
    """A weighted epoch mean (synced across ranks) that never forces a host-device sync on update.

    torchmetrics' default ``nan_strategy="warn"`` tests ``if nans.any()`` on every update, which
    waits for the GPU; it would also silently drop a NaN loss. Its ``"disable"`` skips the test
    but (torchmetrics 1.9) also replaces the update's weights by ones, so a token-weighted mean
    became a mean of batch means. Here the weights are kept and a NaN stays visible.
    """

    def __init__(self) -> None:
        super().__init__(nan_strategy="disable")

    def _cast_and_nan_check_input(
        self, x: float | torch.Tensor, weight: float | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        weight = torch.ones_like(x) if weight is None else torch.as_tensor(weight, device=x.device)
        return x, weight.to(self.dtype)


def running_mean() -> RunningMean:
    """The epoch mean every LightningModule logs its losses with (see :class:`RunningMean`)."""
    return RunningMean()


class LitModule(L.LightningModule):
    """Base class: ``optimizer`` and ``scheduler`` are ``_target_`` configs, built on demand.

    ``optimizer`` is called with the parameters (``_partial_`` is implied; fused on CUDA, see
    :func:`with_fused`); ``scheduler`` (optional) is called with the optimiser, and may carry
    Lightning's ``interval`` / ``frequency`` keys beside its ``_target_``; a ``total_steps: null``
    in it (``WarmupSchedule``, ``OneCycleLR``) becomes the fit's step count (:meth:`fit_steps`),
    so the schedule follows ``trainer.max_epochs``. ``compile`` (see
    :func:`compile_options`) compiles the nets in place in :meth:`configure_model`.
    """

    def __init__(
        self,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None,
        compile: bool | Mapping[str, Any] | None = False,
    ) -> None:
        super().__init__()
        self.optimizer_config = plain(optimizer)
        self.scheduler_config = plain(scheduler)
        self.compile_config = plain(compile)
        self._compiled = False

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> Any:
        """Lightning's ``load_from_checkpoint``, safe for checkpoints from elsewhere.

        The file is read with ``weights_only=True`` (no pickled code) and every ``_target_`` in
        its stored hyperparameters (and in ``kwargs``) must be on litlab's allow-list
        (:func:`litlab.safety.check_targets`) before anything is built.
        """
        checkpoint = load_checkpoint(checkpoint_path)
        stored = checkpoint.get("hyper_parameters", {})
        check_targets({**stored, **plain(kwargs)}, source=str(checkpoint_path))
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def save_plain_hyperparameters(self, **hparams: Any) -> None:
        """Store constructor arguments as plain containers (checkpoint-safe, YAML-friendly)."""
        self.save_hyperparameters({key: plain(value) for key, value in hparams.items()})

    @staticmethod
    def build_net(config: Mapping[str, Any]) -> nn.Module:
        """Instantiate a plain ``nn.Module`` network from its config."""
        return build(config)

    def compile_targets(self) -> list[nn.Module]:
        """The nets to compile: every direct child that owns parameters (metrics own none)."""
        return [child for child in self.children() if next(child.parameters(), None) is not None]

    def configure_model(self) -> None:
        """Compile the nets in place once, when a Trainer sets the model up (fit, test, ...).

        ``nn.Module.compile`` keeps the module object and its parameters, so the state-dict keys
        are those of the uncompiled model; only ``forward`` calls go through the compiled graph.
        """
        options = compile_options(self.compile_config)
        if options is None or self._compiled:
            return
        for net in self.compile_targets():
            net.compile(**options)
        self._compiled = True

    def fit_steps(self, interval: str) -> int:
        """The optimiser steps of the whole fit, for a scheduler's ``total_steps: null``.

        ``trainer.estimated_stepping_batches``: ``max_steps``, or ``max_epochs`` x training batches
        per epoch (after ``limit_train_batches``) / ``accumulate_grad_batches``. So a cosine or
        one-cycle schedule ends where training ends, whatever ``trainer.max_epochs`` is.
        """
        if interval != "step":
            raise ConfigError(
                f"model.scheduler.total_steps=null counts optimiser steps; it needs "
                f"model.scheduler.interval=step, not {interval!r} (or set total_steps)"
            )
        steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(steps):
            raise ConfigError(
                "model.scheduler.total_steps=null needs a finite fit: set trainer.max_epochs or "
                "trainer.max_steps (or set total_steps)"
            )
        return int(steps)

    def configure_optimizers(self) -> Any:
        clips = self._trainer is not None and bool(self._trainer.gradient_clip_val)
        config = with_fused(self.optimizer_config, self.device, clips_gradients=clips)
        optimizer = build(config, _partial_=True)(self.parameters())
        if not self.scheduler_config:
            return optimizer
        config = dict(self.scheduler_config)
        lightning_keys = {k: config.pop(k) for k in ("interval", "frequency") if k in config}
        if "total_steps" in config and config["total_steps"] is None:
            config["total_steps"] = self.fit_steps(lightning_keys.get("interval", "epoch"))
        scheduler = build(config, _partial_=True)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **lightning_keys}}
