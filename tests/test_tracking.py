"""Run tracking beyond TensorBoard: ``logger=mlflow`` and ``logger=wandb`` receive the run's
hyperparameters (those of TensorBoard's HPARAMS), its metrics and its figures.

Both extras are in the dev extra, so ``make install`` (and CI) installs them and these tests run.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from litlab.builders import hparams_for_logging

TINY_VAE = ["model.z_dim=2", "model.nll_num_samples=2", "model.naive_num_samples=2",
            "data.eval_batch_size=200", "trainer.limit_val_batches=1"]  # fmt: skip
FIGURES = {"samples/means", "samples/binary", "samples/manifold", "reconstructions",
           "figures/loss_curves"}  # fmt: skip


def expected_hparams(cfg) -> dict[str, str]:
    """TensorBoard's HPARAMS keys and values, as strings (MLflow keeps params as strings)."""
    overrides = list(HydraConfig.get().overrides.task)
    return {key: str(value) for key, value in hparams_for_logging(cfg, overrides).items()}


def test_mlflow_gets_hparams_metrics_and_figures(make_cfg, run_train, tmp_path: Path) -> None:
    pytest.importorskip(
        "mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'"
    )
    from mlflow import MlflowClient

    cfg = make_cfg("logger=mlflow", *TINY_VAE, output_dir=tmp_path / "logs")
    hparams = expected_hparams(cfg)
    metrics = run_train(cfg)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/logs/mlflow.db")
    experiment = client.get_experiment_by_name(cfg.task_name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "logs"
    assert run.data.tags["run_dir"] == cfg.paths.output_dir
    params = run.data.params
    assert {key: params.get(key) for key in hparams} == {k: v[:250] for k, v in hparams.items()}
    for name, value in metrics.items():
        assert run.data.metrics[name] == pytest.approx(value), name
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "images/samples")}
    assert artifacts == {"images/samples/means", "images/samples/binary", "images/samples/manifold"}
    step = client.list_artifacts(run.info.run_id, "images/reconstructions")[0].path
    local = Path(client.download_artifacts(run.info.run_id, step, str(tmp_path)))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (Path(cfg.paths.output_dir) / "metrics.csv").is_file()  # the CSV logger stays


def test_wandb_offline_gets_hparams_metrics_and_figures(make_cfg, run_train, tmp_path) -> None:
    """Offline (no network, no account); two runs in one process (a sweep's jobs) are two W&B
    runs. The W&B run is read while it is open (the offline file is W&B's binary log)."""
    wandb = pytest.importorskip(
        "wandb", reason="the wandb extra is not installed: pip install -e '.[wandb]'"
    )
    ids = []
    try:
        for name in ("a", "b"):
            cfg = make_cfg("logger=wandb", *TINY_VAE, f"seed={len(ids)}",
                           output_dir=tmp_path / name)  # fmt: skip
            hparams = expected_hparams(cfg)
            metrics = run_train(cfg)
            run = wandb.run
            ids.append(run.id)
            assert run.name == name and run.group == cfg.task_name and run.offline
            config = dict(run.config)
            assert {key: str(config.get(key)) for key in hparams} == hparams
            for metric, value in metrics.items():
                assert run.summary[metric] == pytest.approx(value), metric
            assert set(run.summary.keys()) >= FIGURES
            media = Path(run.dir) / "media" / "images"
            assert {p.name.split("_")[0] for p in (media / "samples").glob("*.png")} == {
                "means",
                "binary",
                "manifold",
            }
            assert Path(run.dir).is_relative_to(tmp_path / name / "wandb")
            assert math.isfinite(metrics["test/nll_is"])
    finally:
        wandb.finish()
    assert len(set(ids)) == 2
