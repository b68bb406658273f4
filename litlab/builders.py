"""Building the run's objects from the composed config."""

from __future__ import annotations

import re
from typing import Any

from hydra.utils import instantiate
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers); skip nulls."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def instantiate_callbacks(group: DictConfig | None) -> list[Callback]:
    return instantiate_group(group)


def instantiate_loggers(group: DictConfig | None) -> list[Logger]:
    return instantiate_group(group)


def safe_name(text: str, max_length: int = 120) -> str:
    """A file-name-safe, bounded version of ``text`` (used for per-job run folders)."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_")
    return cleaned[:max_length] or "default"


def register_resolvers() -> None:
    """Resolvers the configs use: ``${safe_name:...}``."""
    if not OmegaConf.has_resolver("safe_name"):
        OmegaConf.register_new_resolver("safe_name", safe_name)


def hparams_for_logging(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The part of the config that describes the experiment (no paths, callbacks or loggers)."""
    keys = ("task_name", "seed", "model", "data", "trainer")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    hparams = {key: resolved[key] for key in keys if key in resolved}
    if isinstance(hparams.get("trainer"), dict):
        hparams["trainer"].pop("default_root_dir", None)
    hparams["overrides"] = " ".join(overrides) or "(none)"
    return hparams
