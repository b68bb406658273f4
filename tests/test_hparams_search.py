"""Hyperparameter search: ``hparams_search=<study>`` through Hydra's Optuna sweeper (the
``search`` extra, installed by ``make install`` through the dev extra, so CI runs these)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from litlab.builders import CONF_DIR
from tests.conftest import TINY, run_python

pytest.importorskip(
    "hydra_plugins.hydra_optuna_sweeper",
    reason="the search extra is not installed: pip install -e '.[search]'",
)

SEARCHES = sorted(path.stem for path in (CONF_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("search", SEARCHES)
def test_search_config_fits_its_study(search: str) -> None:
    """Each search: a multirun of the Optuna sweeper in the direction of the study's
    optimized_mode, over keys the study's config has."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"hparams_search={search}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.direction == {"min": "minimize", "max": "maximize"}[cfg.optimized_mode]
    assert len(sweeper.params) >= 2
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"{search}: {key} is not in the config"


def test_small_vae_search_runs_and_is_summarised(tmp_path: Path, data_dir: Path) -> None:
    """A real 3-trial search (tiny limits): one job folder per trial, Optuna's best trial is the
    best optimized_metric of the sweep summary, and the summary counts every trial."""
    sweep = tmp_path / "search"
    cmd = [
        "train.py", "hparams_search=vae", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2", *TINY, "trainer.limit_val_batches=1",
        "model.nll_num_samples=2", "model.naive_num_samples=2", "data.eval_batch_size=200",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = run_python(cmd, data_dir, timeout=600, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Multirun summary: 3 jobs, 0 failed" in output

    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["COMPLETED"] * 3
    for row in rows:
        assert (Path(row["run_dir"]) / "checkpoints" / "last.ckpt").is_file()
        assert "model.optimizer.lr=" in row["overrides"] and "model.beta=" in row["overrides"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.beta"}
    assert 1e-4 <= best["best_params"]["model.optimizer.lr"] <= 1e-2
    assert 0.25 <= best["best_params"]["model.beta"] <= 2.0
    assert best["best_value"] == pytest.approx(min(float(r["optimized_metric"]) for r in rows))
    trial = next(r for r in rows if float(r["optimized_metric"]) == best["best_value"])
    config = yaml.safe_load((Path(trial["run_dir"]) / "config.yaml").read_text())
    assert config["model"]["beta"] == pytest.approx(best["best_params"]["model.beta"])


def test_failed_trials_are_summarised(tmp_path: Path, data_dir: Path) -> None:
    """Trials that diverge (lr 1e11..1e12) fail one by one without stopping the search; the
    summary lists them after the last trial, and the command fails (no trial completed)."""
    sweep = tmp_path / "search"
    cmd = [
        "train.py", "hparams_search=vae", "hydra.sweeper.n_trials=2",
        "model.optimizer.lr=tag(log,interval(1e11,1e12))", *TINY,
        "trainer.limit_val_batches=1", "model.nll_num_samples=2", "model.naive_num_samples=2",
        "data.eval_batch_size=200", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = run_python(cmd, data_dir, timeout=600, OMP_NUM_THREADS="1")
    assert proc.returncode != 0
    assert "Multirun summary: 2 jobs, 2 failed" in proc.stdout + proc.stderr
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["FAILED"] * 2
    errors = [row["error"].lower() for row in rows]
    assert all("non-finite" in error or "nan" in error for error in errors), errors
