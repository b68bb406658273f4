"""Sweeps that resume: run ``python train.py -m ... hydra.sweep.dir=<its folder>`` again and each
job is skipped if it completed, resumed from its own ``last.ckpt`` if it was killed, else run.

A job is known by its folder, ``<sweep dir>/<num>_<swept values>``, and by its config: the
resolved config ``train.py`` saves as ``<job>/config.yaml``, compared without ``paths`` (folders,
which may move) and ``ckpt_path`` (how the run started, not what it trains), with the job's own
folder written as ``<job folder>``. What a folder holds for this job (:func:`job_state`):

* ``new``: no run outputs (see :data:`litlab.rundirs.RUN_OUTPUTS`): the job runs there;
* ``completed``: a run of this config that wrote ``final_metrics.json`` (:func:`record_completed`,
  after the final test) and kept its ``checkpoints/last.ckpt``: the job is skipped, and its stored
  metrics are returned, so a sweeper still gets every job's ``optimized_metric``;
* ``resumable``: a run of this config with a ``last.ckpt`` and no final metrics (killed, or
  failed): the job resumes from that ``last.ckpt`` (``ckpt_path``, which
  :func:`litlab.rundirs.check_output_dir` accepts because it lies inside the folder);
* ``started``: a run of this config with no ``last.ckpt`` (killed before its first checkpoint, or
  just started by rank 0 of this very job, when SLURM starts every rank of a job): for rank 0 it is
  taken, for the other ranks it is their job's folder;
* ``taken``: a run of another config.

``hydra.sweep.subdir`` is ``${sweep_job_dir:...}`` (:func:`sweep_job_dir`): before Hydra writes
anything into a job's folder, it picks the first of ``<name>``, ``<name>_1``, ``<name>_2``, ...
that this process can use, so a job whose config changed runs afresh in a new folder and is never
mixed into the old one (and, run again, finds its own). :func:`skip_or_resume` (``train.py``'s
``main``) then acts on what the chosen folder holds; ``litlab.hydra_callbacks.JobSummary`` reads
the same state to say which jobs were skipped, resumed and run.

Only multirun jobs are affected: a single run, and the DDP ranks Lightning restarts with
``hydra.run.dir=<rank 0's folder>``, behave as before. The default ``hydra.sweep.dir`` is a new
folder per launch (``${fresh_dir:...}``): to resume, name the earlier sweep's folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from litlab.builders import sweep_job_name
from litlab.errors import ConfigError
from litlab.files import atomic_write
from litlab.rundirs import MAX_SUFFIX, previous_outputs

log = logging.getLogger(__name__)
COMPLETED_FILE = "final_metrics.json"  # written after the final test: the run completed
OUTPUT_DIR = "<job folder>"  # stands for the job's folder in a compared config
NOT_COMPARED = ("paths", "ckpt_path")
ACTIONS = {"new": "run", "completed": "skipped", "resumable": "resumed"}


@dataclass(frozen=True)
class JobState:
    """What ``folder`` holds for a job: ``kind`` (see the module's docstring) and, when
    ``taken``, why the job cannot use it."""

    folder: Path
    kind: Literal["new", "completed", "resumable", "started", "taken"]
    why: str = ""

    @property
    def last_ckpt(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    @property
    def action(self) -> str:
        """``skipped``, ``resumed`` or ``run``: what the sweep does with the job."""
        return ACTIONS.get(self.kind, "run")

    @property
    def usable(self) -> bool:
        """Whether this job may run in the folder (a ``started`` one: only DDP ranks > 0)."""
        return self.kind in ACTIONS or (self.kind == "started" and rank_zero_only.rank > 0)


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as compared between runs: resolved, without ``hydra``, ``paths`` and
    ``ckpt_path``, its own folder written as ``<job folder>``."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra", None)
    tree.setdefault("paths", {})["output_dir"] = OUTPUT_DIR
    resolved = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    return comparable(resolved, OUTPUT_DIR)


def stored_config(folder: Path) -> dict[str, Any] | None:
    """``<folder>/config.yaml`` as :func:`job_config` writes a config; None if unreadable."""
    try:
        tree = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    except (OSError, OmegaConfBaseException, ValueError):
        return None
    if not isinstance(tree, dict):
        return None
    paths = tree.get("paths")
    output_dir = paths.get("output_dir") if isinstance(paths, dict) else None
    return comparable(tree, str(output_dir or folder))


def comparable(tree: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """``tree`` without the keys that are not compared, ``output_dir`` as ``<job folder>``."""

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list):
            return [swap(item) for item in value]
        if isinstance(value, str) and (value == output_dir or value.startswith(output_dir + "/")):
            return OUTPUT_DIR + value[len(output_dir) :]
        return value

    return swap({key: value for key, value in tree.items() if key not in NOT_COMPARED})


def first_difference(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """``key: old -> new`` for the first key (in ``new``'s order) whose values differ; ''."""
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a} -> {b}"
    return ""


def job_state(folder: str | os.PathLike, config: dict[str, Any]) -> JobState:
    """What ``folder`` holds for the job whose :func:`job_config` is ``config``."""
    folder = Path(folder)
    if not previous_outputs(folder):
        return JobState(folder, "new")
    stored = stored_config(folder)
    if stored is None:
        return JobState(folder, "taken", "holds a run without a readable config.yaml")
    difference = first_difference(stored, config)
    if difference:
        return JobState(folder, "taken", f"holds a run of another config ({difference})")
    state = JobState(folder, "completed")
    trains = config.get("train", True)
    if completed_metrics(folder) is not None and (state.last_ckpt.is_file() or not trains):
        return state
    if state.last_ckpt.is_file() and trains:
        return JobState(folder, "resumable")
    return JobState(folder, "started", "holds a run of this config that left no last.ckpt")


def sweep_job_dir(job_num: int, task_overrides: Sequence[str], _root_: DictConfig) -> str:
    """``hydra.sweep.subdir``: the job's folder name, :func:`~litlab.builders.sweep_job_name`,
    or the first ``<name>_N`` this job can use (see :func:`job_state`)."""
    name = sweep_job_name(job_num, task_overrides)
    try:
        config = job_config(_root_)
    except OmegaConfBaseException:
        return name  # the job itself reports the config's error
    sweep_dir = Path(str(_root_.hydra.sweep.dir))
    passed_over = []
    for n in range(MAX_SUFFIX):
        candidate = name if n == 0 else f"{name}_{n}"
        state = job_state(sweep_dir / candidate, config)
        if state.usable:
            if passed_over:
                log.info("job %s runs in %s: %s", job_num, candidate, "; ".join(passed_over))
            return candidate
        passed_over.append(f"{candidate} {state.why}")
    raise ConfigError(f"{sweep_dir / name}: {MAX_SUFFIX} folders of that name are taken")


def register_sweep_job_dir() -> None:
    """Register ``${sweep_job_dir:<job num>,<task overrides>}`` (not cached: folders change)."""
    if not OmegaConf.has_resolver("sweep_job_dir"):
        OmegaConf.register_new_resolver("sweep_job_dir", sweep_job_dir)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def current_job(cfg: DictConfig) -> JobState | None:
    """This multirun job's state in its folder (``cfg`` with or without ``hydra``); None in a
    single run."""
    if not in_multirun():
        return None
    return job_state(HydraConfig.get().runtime.output_dir, job_config(cfg))


def skip_or_resume(cfg: DictConfig) -> dict[str, float] | None:
    """For a multirun job: the stored final metrics when its run completed (skip it); else
    ``None`` (train it), with ``cfg.ckpt_path`` set to its own ``last.ckpt`` when it resumes."""
    state = current_job(cfg)
    if state is None or state.kind == "new":
        return None
    if state.kind == "completed":
        log.info("Skipped: %s holds this job's completed run", state.folder)
        return completed_metrics(state.folder)
    if state.kind == "resumable":
        log.info("Resuming this job from %s", state.last_ckpt)
        cfg.ckpt_path = str(state.last_ckpt)
    return None


def record_completed(output_dir: str | os.PathLike, metrics: Mapping[str, float]) -> Path:
    """Write ``<output_dir>/final_metrics.json`` (atomically): the run completed, with these
    final metrics."""
    path = Path(output_dir) / COMPLETED_FILE
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"metrics": dict(metrics)}, indent=1) + "\n")
    return path


def completed_metrics(folder: str | os.PathLike) -> dict[str, float] | None:
    """The final metrics in ``<folder>/final_metrics.json``; None when there is no readable one."""
    try:
        metrics = json.loads((Path(folder) / COMPLETED_FILE).read_text())["metrics"]
        return {str(name): float(value) for name, value in metrics.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
