"""The composed configuration: presets, groups and the model -> data choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from litlab.builders import CONF_DIR
from tests.test_train_vae import EVAL_SMALL


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("cpu", {"accelerator": "cpu", "precision": "32-true"}),
        ("gpu", {"accelerator": "gpu", "precision": "bf16-mixed"}),
        ("ddp", {"strategy": "ddp", "num_nodes": 1}),
    ],
)
def test_trainer_presets(make_cfg, preset: str, expected: dict) -> None:
    cfg = make_cfg(f"trainer={preset}", tiny=False)
    assert {key: cfg.trainer[key] for key in expected} == expected
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


def test_command_line_accelerator_override(make_cfg) -> None:
    cfg = make_cfg("model=vae_cnn", "trainer.accelerator=gpu", tiny=False)
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.data._target_ == "datamodules.mnist.MNISTDataModule"


@pytest.mark.parametrize("model", ["vae_mlp", "vae_cnn", "vae_cnn_deep"])
def test_vae_models_bring_mnist_and_their_figures(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}", tiny=False)
    assert cfg.data._target_ == "datamodules.mnist.MNISTDataModule"
    assert cfg.callbacks.vae_figures._target_ == "litlab.callbacks.vae_figures.VAEFigures"
    assert cfg.task_name == model


def test_experiment_overlays_model_and_data(make_cfg) -> None:
    cfg = make_cfg("experiment=vae_mlp_seed", tiny=False)
    assert cfg.task_name == "vae_mlp_seed"
    assert cfg.data.binarize == "none"
    assert cfg.trainer.max_epochs == 100
    assert cfg.model.encoder.hidden_dims == [512, 256] and cfg.model.z_dim == 20


def test_debug_fast_dev_run_runs(make_cfg, run_train, tmp_path: Path) -> None:
    cfg = make_cfg("debug=fast_dev_run", *EVAL_SMALL, tiny=False)
    assert cfg.task_name == "debug" and cfg.trainer.fast_dev_run is True
    metrics = run_train(cfg)
    assert "test/loss" in metrics and "train/loss" in metrics


def test_data_override_beats_the_models_choice(make_cfg) -> None:
    cfg = make_cfg("model=vae_mlp", "data=wikitext2", tiny=False)
    assert cfg.data._target_ == "datamodules.wikitext2.WikiText2DataModule"
    assert cfg.model._target_ == "lightning_modules.vae.VAE"


def test_job_count_includes_the_sweep_params_of_the_config(tmp_path: Path) -> None:
    """A sweep declared in the config (hydra.sweeper.params) is counted as the sweeper runs it,
    so the multirun summary is printed after its last job; the command line overrides a key."""
    from litlab.hydra_callbacks import count_jobs

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = ["experiment=ln_lr_sensitivity", f"paths.log_dir={tmp_path}"]
        full = compose("train", overrides=base, return_hydra_config=True)
        narrowed = compose(
            "train", overrides=[*base, "model.num_layers=2"], return_hydra_config=True
        )
    GlobalHydra.instance().clear()
    assert count_jobs(full) == 4 * 3 * 2 * 2
    assert count_jobs(narrowed) == 4 * 3 * 2
