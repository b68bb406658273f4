"""Hydra callbacks (``hydra.callbacks`` in ``conf/hydra/default.yaml``).

:class:`JobSummary`: a multirun lists, when its last job ends, every job's number, status, action
(``run``, ``resumed`` from its ``last.ckpt`` or ``skipped`` as completed, when a sweep is run again
in its folder: :mod:`litlab.sweeps`), returned ``optimized_metric``, swept values and run folder,
and keeps the same table in ``<sweep dir>/summary.csv``. Hydra's basic launcher runs every job
even when one fails (the failure is reported once all have run, and the exit status is then
non-zero); the summary says which ones to look at.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from litlab.errors import RunError, describe
from litlab.files import write_csv
from litlab.sweeps import current_job

log = logging.getLogger(__name__)
HEADER = ("job", "status", "action", "optimized_metric", "overrides", "run_dir", "error")


def count_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep makes: the basic sweeper's product of the swept values (its
    ``params`` in the config and the command line's),
    the Optuna sweeper's ``n_trials`` (``hparams_search=...``); None for other sweepers."""
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    if target.endswith("OptunaSweeper"):  # a grid sampler may run fewer trials: report at the end
        grid = "GridSampler" in str(sweeper.get("sampler", {}).get("_target_", ""))
        return None if grid else int(sweeper.n_trials)
    if not target.endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    # as the sweeper itself: the config's hydra.sweeper.params first, the command line after
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))


def one_line(error: BaseException) -> str:
    """The message a user saw for a failed job, on one line (a :class:`RunError` already says its
    type). Hydra's "Error in call to target ...:" ends its first line; the reason follows."""
    text = str(error) if isinstance(error, RunError) else describe(error)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class JobSummary(Callback):
    """Record each multirun job's outcome; print and save the table after the last one."""

    def __init__(self, filename: str = "summary.csv") -> None:
        self.filename = filename
        self.rows: list[tuple[Any, ...]] = []
        self.total: int | None = None
        self.sweep_dir: Path | None = None
        self.action = "run"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.rows, self.total = [], count_jobs(config)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """What ``train.py`` will do with the job's folder (read before it writes anything)."""
        try:
            state = current_job(config)
        except Exception:  # noqa: BLE001  (a bad config: the job itself reports it)
            state = None
        self.action = state.action if state is not None else "run"

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or self.sweep_dir is None:
            return
        failed = job_return.status != JobStatus.COMPLETED
        error = one_line(job_return._return_value) if failed else ""
        status = "FAILED" if failed else "COMPLETED"
        overrides = " ".join(job_return.overrides or [])
        value = "" if failed or job_return._return_value is None else job_return._return_value
        run_dir = config.hydra.runtime.output_dir
        row = (config.hydra.job.num, status, self.action, value, overrides, run_dir, error)
        self.rows.append(row)
        write_csv(self.sweep_dir / self.filename, HEADER, self.rows)
        if len(self.rows) == self.total:
            self.report()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.total is None:  # another sweeper: report at the end instead
            self.report()

    def report(self) -> None:
        failed = sum(row[1] == "FAILED" for row in self.rows)
        actions = [row[2] for row in self.rows]
        counts = ", ".join(f"{actions.count(a)} {a}" for a in ("run", "resumed", "skipped"))
        lines = [
            f"{len(self.rows)} jobs, {failed} failed; {counts} "
            f"(table: {self.sweep_dir / self.filename})"
        ]
        for _, status, action, _, _, run_dir, error in self.rows:
            lines.append(f"  {status:9} {action:7} {run_dir}")
            if error:
                lines.append(f"      {error}")
        log.info("Multirun summary: %s", "\n".join(lines))
