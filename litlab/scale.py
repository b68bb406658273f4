"""Scaling up: what litlab checks before Lightning starts data-parallel processes.

One node, ``trainer=ddp trainer.devices=N``: Lightning starts ranks 1..N-1 itself by re-running
``train.py`` with the same overrides plus ``hydra.run.dir=<rank 0's run folder>`` and
``hydra.output_subdir=null`` (``_hydra_subprocess_cmd`` in ``lightning.fabric.strategies.launchers.
subprocess_script``), so every rank works in rank 0's folder and only rank 0 writes ``.hydra/``.

That relaunch replays the whole command line: inside a Hydra multirun (``-m``) each child would
start the whole sweep again. :func:`refuse_multirun_ddp` stops such a run before any process is
started. Runs whose processes are started by someone else (SLURM via ``hydra/launcher=slurm``,
``torchrun``) are not affected: Lightning then starts nothing.
"""

from __future__ import annotations

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from litlab.errors import ConfigError


class MultirunDDPError(ConfigError):
    """A Hydra multirun asked Lightning to start DDP processes by re-running the script."""


def lightning_starts_processes(trainer: L.Trainer) -> bool:
    """True when ``trainer.fit`` will start the other ranks by re-running the command line.

    That is DDP's default launcher when no SLURM / torchrun environment started the ranks
    (``ddp_spawn`` forks inside the process instead and replays nothing).
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    if trainer.world_size <= 1 or not isinstance(launcher, _SubprocessScriptLauncher):
        return False
    return not launcher.cluster_environment.creates_processes_externally


def refuse_multirun_ddp(trainer: L.Trainer) -> None:
    """Raise :class:`MultirunDDPError` for ``-m`` with a DDP trainer that would spawn processes."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if lightning_starts_processes(trainer):
        raise MultirunDDPError(
            f"-m (multirun) with trainer.devices={trainer.num_devices} x "
            f"trainer.num_nodes={trainer.num_nodes} DDP is not supported: Lightning would restart "
            "every rank with the whole sweep. Run the jobs one at a time without -m, or launch "
            "the sweep on SLURM with hydra/launcher=slurm, or start each job with torchrun."
        )
