"""Building the run's objects from the composed config."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.utils import instantiate
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]  # the repository: train.py, conf/, ...
CONF_DIR = ROOT / "conf"


def compose_config(
    overrides: Sequence[str], output_dir: str | os.PathLike, data_dir: str | os.PathLike
) -> DictConfig:
    """``conf/train.yaml`` composed as ``train.py`` composes it, without running it.

    For code that drives ``train.train(cfg)`` itself (tests, benchmarks): data from ``data_dir``,
    every output under ``output_dir``; ``HydraConfig`` is set as during a run, and the ``hydra``
    node is dropped from the returned config.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                *overrides,
                f"paths.data_dir={data_dir}",
                f"paths.root_dir={ROOT}",
                f"paths.log_dir={output_dir}",
                f"paths.output_dir={output_dir}",
            ],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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
    """A file-name-safe version of ``text``; too long a name keeps its start plus a short hash."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("_")
    if len(cleaned) > max_length:
        digest = hashlib.sha1(cleaned.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: max_length - 9]}_{digest}"
    return cleaned


def swept_keys(argv: Sequence[str]) -> set[str]:
    """Keys given several values on the command line (``a=1,2``, ``range(...)``, ``choice(...)``)."""
    parser = OverridesParser.create()
    keys = set()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException:
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def sweep_job_name(job_num: int, task_overrides: Sequence[str]) -> str:
    """``<num>_<swept key=value,...>``: a multirun job's folder and TensorBoard run name.

    Only the swept parameters name the job, so the name stays short and tells jobs apart.
    """
    swept = swept_keys(sys.argv[1:])
    parts = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    return f"{job_num}_{safe_name(','.join(parts))}" if parts else str(job_num)


def register_resolvers() -> None:
    """Resolvers the configs use: ``${sweep_job_name:...}``, ``${basename:<path>}`` (a folder's
    name: the MLflow and W&B run names are the run folder's)."""
    if not OmegaConf.has_resolver("sweep_job_name"):
        OmegaConf.register_new_resolver("sweep_job_name", sweep_job_name)
    if not OmegaConf.has_resolver("basename"):
        OmegaConf.register_new_resolver("basename", lambda path: Path(str(path)).name)


NOT_HPARAMS = ("callbacks", "logger", "paths", "hydra")  # config groups that are no hyperparameter


def hparams_for_logging(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, Any]:
    """The run's hyperparameters as flat ``dotted.key: value`` pairs, for the HPARAMS table.

    First the ones the command line set, with their values (``model.z_dim: 10``; a config group
    such as ``model=vae_cnn`` as its choice, ``model: vae_cnn``); then the chosen ``model``,
    ``data`` and ``experiment``, ``task_name``, ``seed``, ``optimized_metric`` and every leaf
    of ``model``, ``data`` and ``trainer``; last ``overrides``, the command line as one string,
    which names the leading keys to :func:`litlab.loggers.log_hparams_with_metrics`.
    Left out: callbacks, loggers and paths, overridden or not (a folder is no hyperparameter,
    and an absolute one differs between machines); ``_partial_``; a ``_target_`` becomes its
    node's value, the class name (``model.optimizer: AdamW``).
    """
    resolved = OmegaConf.to_container(cfg, resolve=True)
    hparams: dict[str, Any] = {}
    for key in ("task_name", "seed", "optimized_metric", "model", "data", "trainer"):
        if key in resolved:
            flatten_config(resolved[key], key, hparams)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    for group in ("model", "data", "experiment"):
        if choices.get(group) is not None:
            hparams[group] = choices[group]
    leading: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key.split(".")[0].split("/")[0] in NOT_HPARAMS:
            continue
        if choices.get(key) is not None:  # a config group: its choice
            hparams.pop(key, None)
            leading[key] = choices[key]
        elif key in hparams:
            leading[key] = hparams.pop(key)
        # else (ckpt_path, train, tags...): no hyperparameter; `overrides` keeps it
    hparams = {**leading, **hparams}
    hparams = {key: value for key, value in hparams.items() if not is_path(key, value)}
    return {**hparams, "overrides": " ".join(overrides) or "(none)"}


def flatten_config(node: Any, key: str, out: dict[str, Any]) -> None:
    """``{"a": {"b": 1}}`` -> ``out["a.b"] = 1``; ``_target_`` -> its class name; lists -> text."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "_partial_":
                continue
            if name == "_target_":
                out[key] = str(value).rsplit(".", 1)[-1]
            else:
                flatten_config(value, f"{key}.{name}", out)
    elif isinstance(node, list):
        items = []
        for item in node:
            target = item.get("_target_") if isinstance(item, dict) else None
            items.append(str(target).rsplit(".", 1)[-1] if target else str(item))
        out[key] = "[" + ", ".join(items) + "]"
    else:
        out[key] = node


def is_path(key: str, value: Any) -> bool:
    """A folder or file setting (``data.data_dir``, ``ckpt_path``, ``*.dirpath``, ``/abs/...``)."""
    name = key.rsplit(".", 1)[-1]
    if name.endswith(("_dir", "_path", "dirpath")):
        return True
    return isinstance(value, str) and value.startswith(("/", "./", "../", "~"))
