"""``python train.py ...`` as a user types it: real subprocesses, real config composition."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import yaml

from tests.conftest import TINY, run_python

VAE_SMALL = ["model.nll_num_samples=10", "model.naive_num_samples=10", "data.eval_batch_size=200"]


def run_cli(args: list[str], data_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_python(["train.py", *args], data_dir, timeout)


def test_model_picks_its_data_set(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(["model=vae_cnn", *TINY, *VAE_SMALL, f"hydra.run.dir={run_dir}"], data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["_target_"] == "datamodules.mnist.MNISTDataModule"
    assert config["model"]["encoder"]["_target_"].endswith("ReportConvEncoder")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "test/nll_is" in result.stdout


def test_multirun_writes_one_folder_per_job(tmp_path: Path, data_dir: Path) -> None:
    """The default sweep folder: <log_dir>/<task>/multiruns/<date>_<time>/<num>_<swept values>."""
    result = run_cli(["-m", "model.z_dim=2,3", *TINY, *VAE_SMALL, f"paths.log_dir={tmp_path}"],
                     data_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "vae_mlp" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_model.z_dim=2", "1_model.z_dim=3"]
    for job in jobs:
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert (sweep / jobs[0] / "figures" / "latent_manifold.png").is_file()  # z_dim == 2 only
    assert not (sweep / jobs[1] / "figures" / "latent_manifold.png").exists()


def test_unknown_option_is_one_clear_error(tmp_path: Path, data_dir: Path) -> None:
    result = run_cli(["model=vae_nope", f"hydra.run.dir={tmp_path / 'run'}"], data_dir, 120)
    assert result.returncode != 0
    assert "model/vae_nope" in result.stderr and "vae_cnn" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_failing_sweep_job_leaves_the_others_and_is_summarised(
    tmp_path: Path, data_dir: Path
) -> None:
    """Job 1 diverges (NaN loss); jobs 0 and 2 still train and test; the summary lists all three."""
    result = run_cli(["-m", "model.optimizer.lr=1e-3,1e12,2e-3", *TINY, *VAE_SMALL,
                      "callbacks.finite_loss.check_every_n_steps=1", f"hydra.sweep.dir={tmp_path}"],
                     data_dir)  # fmt: skip
    assert result.returncode == 1
    assert "loss became nan" in result.stderr and "Traceback" not in result.stderr
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0", "COMPLETED"), ("1", "FAILED"), ("2", "COMPLETED")
    ]  # fmt: skip
    assert "NonFiniteLossError" in rows[1]["error"]
    for row in (rows[0], rows[2]):
        assert (Path(row["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
        assert "test/nll_is" in (Path(row["run_dir"]) / "metrics.csv").read_text()
    assert "Multirun summary: 3 jobs, 1 failed" in result.stdout + result.stderr
