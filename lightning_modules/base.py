"""What every litlab LightningModule shares: nets, optimiser and scheduler built from configs.

Sub-modules, optimiser and scheduler arrive as plain ``_target_`` dictionaries (not objects) and
are stored as hyperparameters, so a checkpoint rebuilds its model with no extra arguments:
``VAE.load_from_checkpoint(path)``. The stored hyperparameters are plain Python containers, which
``torch.load(weights_only=True)`` accepts.

One way for each job, in every model (VAE, Seq2Seq, TransformerLM):

* **Nets**: built in ``__init__`` by :meth:`LitModule.build_net` from the net's own ``_target_``
  config (``model.encoder``, ``model.decoder``: the options of that net alone) and, by keyword,
  the sizes the model owns: sizes its nets share (``z_dim``; ``hidden_dim``, ``num_layers``) and
  facts of the data (vocabulary sizes). Those are arguments of the module, written once at
  ``model.*`` and never copied into a net's config (a net config that sets one to another value is
  refused). The Transformer LM's one net has no options of its own: its whole architecture is
  model-level (flat, so that sweeps read ``model.num_layers=1,2,4 model.norm_first=false,true``)
  and the module passes all of it, ``Transformer(TransformerConfig(**sizes))``.
* **Hyperparameters**: each constructor calls ``self.save_hyperparameters()`` (Lightning stores the
  constructor's arguments, after the constructor normalised them). They arrive as plain containers
  (``train.py`` instantiates with ``_convert_="all"``; :meth:`LitModule.load_from_checkpoint`
  passes the stored ones), and :meth:`LitModule.on_save_checkpoint` writes them plain in any case.
* **Epoch metrics**: every logged quantity is a torchmetrics object in ``self.metrics``, keyed by
  its logged name (``train/loss``), for each of :data:`STAGES`. A step updates it with
  :meth:`LitModule.log_epoch`, which hands it to ``self.log`` (epoch level) at the first batch of
  an epoch only, or at the first after resuming mid-epoch (:meth:`LitModule.epoch_log_due`):
  Lightning keeps the object, computes it at the epoch's end and resets it, so the numbers are
  those of logging at every step without Lightning's per-call bookkeeping (about a millisecond per
  metric on CPU, a tenth of a VAE-MLP step; see benchmarks/RESULTS.md).

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
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torchmetrics import MeanMetric, Metric

from litlab.checkpoints import load_checkpoint
from litlab.errors import ConfigError, user_error
from litlab.safety import check_targets, with_current_targets

STAGES = ("train", "val", "test")


def plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build(config: Mapping[str, Any], **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` config (a plain mapping or an OmegaConf node); targets that
    moved since an older checkpoint was written are renamed first (``litlab.safety.RENAMED``).

    A constructor refusing its arguments raises its own error here, not Hydra's wrapper of it,
    so a model built in Python fails as its net does (``ValueError``, ``ConfigError``).
    """
    try:
        return instantiate(OmegaConf.create(with_current_targets(plain(config))), **kwargs)
    except InstantiationException as err:
        found = user_error(err)
        if found is None:
            raise
        raise found[1] from None


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

    The update runs every training step (three times for a VAE), so it is written out: the
    same sums as torchmetrics' ``update`` (``mean_value += sum(w x)``, ``weight += sum(w)``, in
    the metric's dtype), added in place, without the wrapper's attribute assignments and the
    broadcasting and casting of a weight of ones (about a quarter of a millisecond per VAE-MLP step
    on one CPU thread; benchmarks/RESULTS.md).
    """

    def __init__(self) -> None:
        super().__init__(nan_strategy="disable")
        self.update = self._update  # instead of torchmetrics' wrapped update (see the docstring)

    def __setstate__(self, state: dict[str, Any]) -> None:  # copies and unpickling re-wrap update
        super().__setstate__(state)
        self.update = self._update

    def _update(
        self, value: float | torch.Tensor, weight: float | torch.Tensor | None = None
    ) -> None:
        state = self.__dict__  # plain attributes: what Metric's wrapper sets, without __setattr__
        state["_computed"] = None
        state["_update_count"] += 1
        value = torch.as_tensor(value, device=self.mean_value.device).detach()
        value = value.to(self.mean_value.dtype)
        if weight is None:
            self.mean_value.add_(value.sum())
            self.weight.add_(value.numel())
            return
        weight = torch.as_tensor(weight, device=value.device).detach().to(value.dtype)
        weight = torch.broadcast_to(weight, value.shape)
        self.mean_value.add_((value * weight).sum())
        self.weight.add_(weight.sum())

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
    in it (``WarmupSchedule`` of :mod:`lightning_modules.schedules`, ``OneCycleLR``) becomes the
    fit's step count (:meth:`fit_steps`), so the schedule follows ``trainer.max_epochs``.
    ``compile`` (see :func:`compile_options`) compiles the nets in place in :meth:`configure_model`.

    A subclass calls ``self.save_hyperparameters()``, builds its nets with :meth:`build_net`, and
    keeps its epoch metrics in ``self.metrics`` (an ``nn.ModuleDict`` keyed by logged name), which
    its steps update through :meth:`log_epoch` (module docstring).
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
        self._first_fit_batch = False  # True from on_train_start to the end of the first batch

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the hyperparameters as plain containers, whatever the constructor was given."""
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = {
                key: plain(value) for key, value in checkpoint["hyper_parameters"].items()
            }

    @staticmethod
    def build_net(config: Mapping[str, Any], **sizes: Any) -> nn.Module:
        """Instantiate a net from its ``_target_`` config, with the model's ``sizes`` by keyword.

        A config that also holds one of ``sizes`` (an older checkpoint's stored ``z_dim``) must
        agree with it; otherwise the model's value would silently win over the net's.
        """
        config = plain(config)
        for key, value in sizes.items():
            if key in config and config[key] != value:
                raise ConfigError(
                    f"{config['_target_']} is given {key}={config[key]!r}, but the model sets "
                    f"{key}={value!r} for its nets: set it once, at model.{key}"
                )
        return build(config, **sizes)

    # -- epoch metrics -------------------------------------------------------------------------
    def epoch_log_due(self, batch_idx: int) -> bool:
        """Whether this batch hands the epoch's metrics to ``self.log``: the first of an epoch, or
        the first of a fit resumed mid-epoch (its ``batch_idx`` is then > 0)."""
        return batch_idx == 0 or self._first_fit_batch

    def log_epoch(self, name: str, *update: Any, batch_idx: int, **log_kwargs: Any) -> None:
        """``self.metrics[name].update(*update)``, logged as ``name`` at the epoch level.

        The metric object is handed to ``self.log`` only when :meth:`epoch_log_due` (module
        docstring); ``log_kwargs`` go to ``self.log`` (``prog_bar``).
        """
        metric: Metric = self.metrics[name]
        metric.update(*update)
        if self.epoch_log_due(batch_idx):
            self.log(name, metric, on_step=False, on_epoch=True, **log_kwargs)

    def on_train_start(self) -> None:
        self._first_fit_batch = True  # a fit resumed mid-epoch starts at batch_idx > 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._first_fit_batch:  # nn.Module's __setattr__ is slow: once, not every step
            self._first_fit_batch = False

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
