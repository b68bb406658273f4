"""What every litlab LightningModule shares: nets, optimiser and scheduler built from configs.

Sub-modules, optimiser and scheduler arrive as plain ``_target_`` dictionaries (not objects) and
are stored as hyperparameters, so a checkpoint rebuilds its model with no extra arguments:
``VAE.load_from_checkpoint(path)``. The stored hyperparameters are plain Python containers, which
``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn


def plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved); anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build(config: Mapping[str, Any], **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` config (a plain mapping or an OmegaConf node)."""
    return instantiate(OmegaConf.create(plain(config)), **kwargs)


class LitModule(L.LightningModule):
    """Base class: ``optimizer`` and ``scheduler`` are ``_target_`` configs, built on demand.

    ``optimizer`` is called with the parameters (``_partial_`` is implied);
    ``scheduler`` (optional) is called with the optimiser, and may carry Lightning's
    ``interval`` / ``frequency`` keys beside its ``_target_``.
    """

    def __init__(self, optimizer: Mapping[str, Any], scheduler: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.optimizer_config = plain(optimizer)
        self.scheduler_config = plain(scheduler)

    def save_plain_hyperparameters(self, **hparams: Any) -> None:
        """Store constructor arguments as plain containers (checkpoint-safe, YAML-friendly)."""
        self.save_hyperparameters({key: plain(value) for key, value in hparams.items()})

    @staticmethod
    def build_net(config: Mapping[str, Any]) -> nn.Module:
        """Instantiate a plain ``nn.Module`` network from its config."""
        return build(config)

    def configure_optimizers(self) -> Any:
        optimizer = build(self.optimizer_config, _partial_=True)(self.parameters())
        if not self.scheduler_config:
            return optimizer
        config = dict(self.scheduler_config)
        lightning_keys = {k: config.pop(k) for k in ("interval", "frequency") if k in config}
        scheduler = build(config, _partial_=True)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **lightning_keys}}
