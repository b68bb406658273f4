"""Shared fixtures: the real data folder and the real, composed config shrunk for tests."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train as train_script  # noqa: E402  (registers the config resolvers)
from litlab.builders import CONF_DIR, compose_config  # noqa: E402

# Overrides that make any study tiny and CPU-only.
TINY = [
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",  # seq2seq_attn validates every 2 epochs
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
]


@pytest.fixture(autouse=True)
def _drop_log_handlers_added_by_a_test() -> None:
    """An in-process Hydra run configures logging with handlers on pytest's captured streams,
    which are closed after the test; later log lines would then print 'Logging error' noise."""
    before = list(logging.root.handlers)
    yield
    for handler in logging.root.handlers[:]:
        if handler not in before:
            logging.root.removeHandler(handler)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real data sets: ``$DATA_DIR`` (CI: ../shared/data) as it is, or else ``<repo>/data``,
    where every data module first downloads what is missing (checksums verified)."""
    if os.environ.get("DATA_DIR"):
        path = Path(os.environ["DATA_DIR"]).resolve()
        if not path.is_dir():
            pytest.fail(f"DATA_DIR={path} is not a folder")
        return path
    path = ROOT / "data"
    scratch = tmp_path_factory.mktemp("prepare")
    for config in sorted((CONF_DIR / "data").glob("*.yaml")):
        cfg = compose_config([f"data={config.stem}"], scratch, path)
        try:
            instantiate(cfg.data).prepare_data()
        except Exception as err:  # noqa: BLE001  (the data module's own message says what to do)
            pytest.fail(f"data set {config.stem!r} unavailable: {err}")
    return path


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, tiny=True)``: the composed config, tiny unless ``tiny=False``."""

    def _make(*overrides: str, tiny: bool = True, output_dir: Path | None = None) -> DictConfig:
        extra = TINY if tiny else []
        return compose_config([*extra, *overrides], output_dir or tmp_path / "run", data_dir)

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture
def run_train() -> Callable[[DictConfig], dict[str, float]]:
    """The real ``train(cfg)`` of ``train.py``."""
    return train_script.train


def subprocess_env(data_dir: Path) -> dict[str, str]:
    """Environment for ``python train.py`` subprocesses: real data, no stray output."""
    env = dict(os.environ, DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    for name in ("PYTEST_CURRENT_TEST", "HYDRA_FULL_ERROR"):  # errors as a user sees them
        env.pop(name, None)
    return env


def run_python(
    args: list[str], data_dir: Path, timeout: int = 300, **env: str
) -> subprocess.CompletedProcess:
    """``python <args>`` from the repo root as a user runs it (see :func:`subprocess_env`);
    keyword arguments add environment variables (e.g. ``OMP_NUM_THREADS="1"``)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=subprocess_env(data_dir) | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sigkill_when_paused(
    args: list[str], marker: Path, data_dir: Path, waiting_for: str, **env: str
) -> None:
    """Start ``python <args>`` as :func:`run_python` does, wait until ``marker`` exists (a pause
    callback of ``tests/callbacks.py`` writes it and holds the run there), then SIGKILL it: no
    handler, no clean-up, like a node failure. ``waiting_for`` names the pause in failures."""
    process = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=subprocess_env(data_dir) | env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"exited before {waiting_for}: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"did not reach {waiting_for} in 300 s")
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


SEQ2SEQ_TINY = [
    "model.hidden_dim=32",
    "model.encoder.embed_dim=32",
    "model.decoder.embed_dim=32",
    "model.beam_size=2",
    "data.eval_batch_size=64",
    "trainer.check_val_every_n_epoch=1",  # the default validates every 2 epochs
    'callbacks.seq2seq_figures.sentences=["je suis plus grand que mes amis .","il a peur de mourir ."]',
]


@pytest.fixture(scope="session")
def seq2seq_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """``python train.py model=seq2seq_attn`` as a subprocess, tiny limits; its run folder."""
    run = tmp_path_factory.mktemp("seq2seq_run")
    train_tiny_seq2seq("model=seq2seq_attn", f"hydra.run.dir={run}", data_dir, train_batches=3)
    return run


def train_tiny_seq2seq(
    study: str, output: str, data_dir: Path, train_batches: int, timeout: int = 300
) -> None:
    """``python train.py <study>`` with :data:`SEQ2SEQ_TINY`, one epoch of ``train_batches``
    batches, one validation and one test batch, as a subprocess on one thread; ``output`` is
    ``hydra.run.dir=...`` (or ``hydra.sweep.dir=...``). Fails the test unless it exits 0."""
    cmd = [
        "train.py", study, *SEQ2SEQ_TINY,
        "trainer.max_epochs=1", f"trainer.limit_train_batches={train_batches}",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "callbacks.progress_bar.refresh_rate=0", output,
    ]  # fmt: skip
    proc = run_python(cmd, data_dir, timeout=timeout, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]


def write_message_table(env_var: str, header: list[str], rows: list[tuple[str, ...]]) -> None:
    """With ``<env_var>=<path>`` set, write ``rows`` (the last cell a message, the one before it
    a command) as a Markdown table: how results/reliability.md's tables are made."""
    target = os.environ.get(env_var)
    if not target or not rows:
        return
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for *cells, command, message in rows:
        cells = [*cells, f"`{command}`", message.replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    Path(target).write_text("\n".join(lines) + "\n")
