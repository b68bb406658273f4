"""Sweeps that resume (litlab/sweeps.py): a real 4-job sweep killed with SIGKILL in its third job
and run again with the same command skips the two completed jobs (their files untouched), resumes
the killed one from its own last.ckpt and runs the last; with one value changed, every job runs
afresh in a new folder; the summary says which jobs were skipped, resumed and run."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from litlab.sweeps import job_config, job_state, record_completed
from tests.conftest import run_python, sigkill_when_paused

JOBS = ["0_seed=0", "1_seed=1", "2_seed=2", "3_seed=3"]
TINY_SWEEP = [
    "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "callbacks.progress_bar.refresh_rate=0", "callbacks.step_checkpoint.every_n_train_steps=2",
    "model.nll_num_samples=2", "model.naive_num_samples=2", "data.eval_batch_size=200",
]  # fmt: skip


def sweep_command(tmp_path: Path, *changed: str) -> list[str]:
    """The sweep; job 2 pauses at step 3 (after its step-2 checkpoint) the first time only."""
    test_callbacks = [
        "+callbacks.pause._target_=tests.callbacks.PauseOnceInJob", "+callbacks.pause.job=2",
        "+callbacks.pause.step=3", f"+callbacks.pause.marker={tmp_path / 'paused'}",
        "+callbacks.steps._target_=tests.callbacks.StepLog",
        f"+callbacks.steps.path={tmp_path / 'steps.txt'}",
    ]  # fmt: skip
    return ["train.py", "-m", *TINY_SWEEP, *changed, *test_callbacks, "seed=0,1,2,3",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip


def snapshot(folder: Path, everything: bool = True) -> dict[str, tuple[str, int | None]]:
    """Every file's hash and modification time. ``everything=False``: what a skipped job keeps
    as it was: the run's own files; Hydra rewrites ``.hydra/`` (same content, new times) for
    every job it starts, and ``train.log`` gets the line that says the job was skipped."""
    files = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if not path.is_file() or (not everything and name == "train.log"):
            continue
        times = everything or not name.startswith(".hydra/")
        files[name] = (hashlib.sha1(path.read_bytes()).hexdigest(),
                       path.stat().st_mtime_ns if times else None)  # fmt: skip
    return files


def summary(sweep: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep / "summary.csv").open()))


def steps_by_job(path: Path) -> dict[int, list[int]]:
    """The steps each job trained since the last call (tests.callbacks.StepLog's file)."""
    steps: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        job, step = map(int, line.split())
        steps.setdefault(job, []).append(step)
    path.unlink()
    return steps


def global_step(job: Path) -> int:
    return torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def test_killed_sweep_resumes_and_changed_config_runs_afresh(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    marker = tmp_path / "paused"
    sigkill_when_paused(
        sweep_command(tmp_path), marker, data_dir, "job 2's pause", OMP_NUM_THREADS="1"
    )
    assert steps_by_job(tmp_path / "steps.txt") == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1, 2]}
    for job in JOBS[:2]:
        assert (sweep / job / "final_metrics.json").is_file()
    assert not (sweep / JOBS[2] / "final_metrics.json").exists()
    assert global_step(sweep / JOBS[2]) == 2  # step 3 was lost with the process
    assert not (sweep / JOBS[3]).exists()
    completed = {job: snapshot(sweep / job, everything=False) for job in JOBS[:2]}

    # the same command again: skipped, skipped, resumed, run
    result = run_python(sweep_command(tmp_path), data_dir, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary(sweep)
    assert [(r["job"], r["status"], r["action"]) for r in rows] == [
        ("0", "COMPLETED", "skipped"), ("1", "COMPLETED", "skipped"),
        ("2", "COMPLETED", "resumed"), ("3", "COMPLETED", "run"),
    ]  # fmt: skip
    assert [Path(r["run_dir"]).name for r in rows] == JOBS
    log = result.stdout + result.stderr
    assert "Multirun summary: 4 jobs, 0 failed; 1 run, 1 resumed, 2 skipped" in log
    for job, row in zip(JOBS[:2], rows, strict=False):
        assert snapshot(sweep / job, everything=False) == completed[job]  # untouched
        stored = (sweep / job / "final_metrics.json").read_text()
        assert f'"val/loss": {row["optimized_metric"]}' in stored  # returned to the sweeper
        assert "Skipped: " in (sweep / job / "train.log").read_text()
    assert steps_by_job(tmp_path / "steps.txt") == {2: [2, 3], 3: [0, 1, 2, 3]}
    last_ckpt = sweep / JOBS[2] / "checkpoints" / "last.ckpt"
    assert f"Restored all states from the checkpoint at {last_ckpt}" in log
    assert global_step(sweep / JOBS[2]) == global_step(sweep / JOBS[3]) == 4
    assert all((sweep / job / "final_metrics.json").is_file() for job in JOBS)

    # one value changed: every job runs afresh in <name>_1; the old folders stay as they were
    before = {job: snapshot(sweep / job) for job in JOBS}
    changed = sweep_command(tmp_path, "trainer.limit_train_batches=3")
    result = run_python(changed, data_dir, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary(sweep)
    assert [r["action"] for r in rows] == ["run"] * 4
    assert [Path(r["run_dir"]).name for r in rows] == [f"{job}_1" for job in JOBS]
    reason = "holds a run of another config (trainer.limit_train_batches: 4 -> 3)"
    assert f"job 0 runs in 0_seed=0_1: 0_seed=0 {reason}" in result.stdout + result.stderr
    assert {job: snapshot(sweep / job) for job in JOBS} == before
    assert steps_by_job(tmp_path / "steps.txt") == {job: [0, 1, 2] for job in range(4)}

    # and that sweep, run again, finds its own folders
    result = run_python(changed, data_dir, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary(sweep)
    assert [(r["action"], Path(r["run_dir"]).name) for r in rows] == [
        ("skipped", f"{job}_1") for job in JOBS
    ]
    assert not (tmp_path / "steps.txt").exists()


def test_job_state_reads_what_a_folder_holds(make_cfg, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "job"
    cfg = make_cfg("seed=1", output_dir=folder)
    config = job_config(cfg)
    assert job_state(folder, config).kind == "new"
    folder.mkdir()
    OmegaConf.save(cfg, folder / "config.yaml", resolve=True)  # as train.py saves it
    started = job_state(folder, config)  # no last.ckpt: not resumable
    assert started.kind == "started" and not started.usable  # rank 0 runs in a new folder
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # SLURM's other ranks join rank 0's run
    assert started.usable
    monkeypatch.undo()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert job_state(folder, config).kind == "resumable"
    record_completed(folder, {"val/loss": 1.5})
    assert job_state(folder, config).kind == "completed"

    moved = tmp_path / "elsewhere" / "job"  # its config names its old folder: still the same run
    shutil.copytree(folder, moved)
    assert job_state(moved, config).kind == "completed"

    other = job_state(folder, job_config(make_cfg("seed=2", output_dir=folder)))
    assert (other.kind, other.why) == ("taken", "holds a run of another config (seed: 1 -> 2)")
