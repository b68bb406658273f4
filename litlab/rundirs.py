"""Run folders: one per run, never shared, never reused by accident.

* ``${fresh_dir:<path>}`` (the default ``hydra.run.dir`` and ``hydra.sweep.dir``): ``<path>`` if it
  does not exist yet, else ``<path>_1``, ``<path>_2``, ...; the folder is created by the resolver
  itself, and ``mkdir`` is atomic, so two runs started in the same second get two folders. The
  value is cached for the run (and copied by Hydra to every job of a sweep, as ``${now:...}``).
  DDP ranks share rank 0's folder: Lightning restarts them with ``hydra.run.dir=<that folder>``.
* :func:`check_output_dir`: a folder given by hand (``hydra.run.dir=...``) that already holds
  another run's outputs is refused, unless this run resumes from a checkpoint inside it; stale
  temporary checkpoint files left by a killed write are removed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from litlab.errors import ConfigError

log = logging.getLogger(__name__)
RUN_OUTPUTS = ("config.yaml", "metrics.csv", "checkpoints", "tensorboard")  # what a run leaves
MAX_SUFFIX = 10_000


def fresh_dir(path: str) -> str:
    """Create and return the first of ``path``, ``path_1``, ``path_2``, ... that did not exist."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(MAX_SUFFIX):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)
    raise ConfigError(f"{path}: {MAX_SUFFIX} run folders of that name already exist")


def register_fresh_dir() -> None:
    """Register ``${fresh_dir:...}`` (cached: resolved once per run)."""
    if not OmegaConf.has_resolver("fresh_dir"):
        OmegaConf.register_new_resolver("fresh_dir", fresh_dir, use_cache=True)


def check_given_folders(argv: list[str], rank_zero: bool = True) -> None:
    """Check the ``hydra.run.dir`` / ``hydra.sweep.dir`` given on the command line before Hydra
    writes into it (its ``.hydra/`` record and log): a folder that cannot be created (under a
    file, on a read-only disk) or a run folder holding another run (see :func:`check_output_dir`)
    is a :class:`ConfigError` naming it, instead of a traceback or an overwritten record.
    Nothing is created here. DDP ranks > 0 (``rank_zero=False``) are restarted by Lightning with
    rank 0's folder, which holds rank 0's run by then: only its creatability is checked."""
    given = dict(arg.split("=", 1) for arg in argv if "=" in arg and not arg.startswith("-"))
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        value = given.get(key, "")
        if not value or "${" in value:
            continue
        folder = Path(value.strip("'\"")).absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            reason = f"{existing} is a file, not a folder"
        elif not os.access(existing, os.W_OK | os.X_OK):
            reason = f"{existing} is not writable"
        else:
            single_run = "-m" not in argv and "--multirun" not in argv
            if key == "hydra.run.dir" and single_run and rank_zero:
                ckpt_path = given.get("ckpt_path")
                check_output_dir(folder, None if ckpt_path in (None, "null", "last") else ckpt_path)
            continue
        raise ConfigError(f"{key}={value}: cannot create the folder ({reason})")


def previous_outputs(output_dir: Path) -> list[str]:
    """The names of another run's outputs found in ``output_dir`` (empty folders do not count)."""
    found = []
    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def check_output_dir(output_dir: str | os.PathLike, ckpt_path: str | None) -> None:
    """Refuse to write into a folder that holds another run's outputs (unless resuming from it).

    Called on rank 0 before anything is built. Also removes ``checkpoints/.*.tmp<pid>`` files
    whose writing process is gone (a kill during an atomic write leaves them).
    """
    output_dir = Path(output_dir)
    clean_stale_temporaries(output_dir / "checkpoints")
    found = previous_outputs(output_dir)
    if not found:
        return
    resuming = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(
        output_dir.resolve()
    )
    if not resuming:
        raise ConfigError(
            f"hydra.run.dir={output_dir} already holds another run ({', '.join(found)}); "
            "choose a new folder, or resume with ckpt_path=<that folder>/checkpoints/last.ckpt"
        )


def clean_stale_temporaries(folder: Path) -> None:
    """Delete ``.<name>.tmp<pid>`` files of ``folder`` whose process no longer runs."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".*.tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            log.info("removed %s, left by a killed checkpoint write", tmp)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (and is not this one's leftover by pid reuse)."""
    if pid == os.getpid():
        return False  # a file of ours from an earlier life of this pid cannot be in use now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
