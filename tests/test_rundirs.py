"""No run writes into another run's folder (issue 13.2), and stale temporary checkpoints go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from litlab.errors import ConfigError
from litlab.rundirs import check_output_dir, fresh_dir
from tests.conftest import ROOT, TINY, subprocess_env
from tests.test_errors import user_message

QUICK = [*TINY, "model.nll_num_samples=2", "model.naive_num_samples=2",
         "model.encoder.hidden_dims=[16]", "model.decoder.hidden_dims=[16]",
         "callbacks.vae_figures.num_samples=4", "callbacks.vae_figures.num_reconstructions=4"]  # fmt: skip


def test_fresh_dir_never_returns_an_existing_folder(tmp_path: Path) -> None:
    base = str(tmp_path / "runs" / "2026-12-01_10-00-00")
    got = [fresh_dir(base) for _ in range(3)]
    assert got == [base, f"{base}_1", f"{base}_2"]
    assert all(Path(p).is_dir() for p in got)


def test_two_runs_started_together_get_two_folders(tmp_path: Path, data_dir: Path) -> None:
    """Two real ``python train.py`` started at once, same ``paths.log_dir``, same second."""
    cmd = [sys.executable, "train.py", *QUICK, f"paths.log_dir={tmp_path}", "task_name=twin",
           "hydra.run.dir='${fresh_dir:${paths.log_dir}/twin/runs/same_second}'"]  # fmt: skip
    env = subprocess_env(data_dir) | {"OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
    runs = sorted((tmp_path / "twin" / "runs").iterdir())
    assert [p.name for p in runs] == ["same_second", "same_second_1"]
    for run in runs:
        assert (run / "config.yaml").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        rows = (run / "metrics.csv").read_text().splitlines()
        assert rows[0].split(",").count("epoch") == 1  # one header: one run's metrics
    sizes = [len((run / "metrics.csv").read_text().splitlines()) for run in runs]
    assert sizes[0] == sizes[1]  # the same run twice, not one folder with both runs' rows


def test_the_default_run_dir_is_fresh(tmp_path: Path) -> None:
    text = (ROOT / "conf" / "hydra" / "default.yaml").read_text()
    assert "dir: ${fresh_dir:${paths.log_dir}/${task_name}/runs/" in text
    assert "dir: ${fresh_dir:${paths.log_dir}/${task_name}/multiruns/" in text


def test_a_folder_holding_another_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (tmp_path / "metrics.csv").write_text("epoch\n")
    with pytest.raises(
        ConfigError, match=r"already holds another run \(metrics.csv, checkpoints\)"
    ):
        check_output_dir(tmp_path, None)
    with pytest.raises(ConfigError):  # resuming from a checkpoint elsewhere does not make it ours
        check_output_dir(tmp_path, str(tmp_path.parent / "other.ckpt"))
    check_output_dir(tmp_path, str(tmp_path / "checkpoints" / "last.ckpt"))  # resuming: allowed
    check_output_dir(tmp_path / "empty", None)  # nothing there: allowed


def test_train_py_refuses_a_used_folder_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    before = (tmp_path / "config.yaml").read_text()
    cmd = [sys.executable, "train.py", *QUICK, f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(data_dir), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1
    message = user_message(proc.stderr)
    assert "already holds another run (config.yaml)" in message, proc.stderr
    assert message.count("Error") == 1 and "Traceback" not in proc.stderr
    assert (tmp_path / "config.yaml").read_text() == before


def test_stale_temporary_checkpoints_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = folder / f".last.ckpt.tmp{dead}"
    live = folder / f".last.ckpt.tmp{os.getppid()}"  # a running process's file stays
    stale.write_bytes(b"")
    live.write_bytes(b"")
    check_output_dir(tmp_path, str(folder / "last.ckpt"))
    assert not stale.exists() and live.exists()
