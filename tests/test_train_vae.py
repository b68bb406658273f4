"""``train(cfg)`` end to end on CPU for the VAEs, with tiny limits and the real MNIST files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.vae import VAE

EVAL_SMALL = ["model.nll_num_samples=20", "model.naive_num_samples=20", "data.eval_batch_size=200"]


@pytest.mark.parametrize("model", ["vae_mlp", "vae_cnn"])
def test_train_writes_run_folder(make_cfg, run_train, tmp_path: Path, model: str) -> None:
    cfg = make_cfg(f"model={model}", *EVAL_SMALL)
    assert cfg.data._target_ == "datamodules.mnist.MNISTDataModule"
    metrics = run_train(cfg)
    out = Path(cfg.paths.output_dir)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("epoch_*.ckpt"))
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "metrics.csv").is_file()
    assert (out / "config.yaml").is_file()
    assert (out / "figures" / "samples_means_epoch001.png").is_file()
    assert (out / "figures" / "samples_binary_epoch001.png").is_file()
    assert (out / "figures" / "reconstructions.png").is_file()
    assert (out / "figures" / "loss_curves.png").is_file()
    for name in ("test/loss", "test/nll_is", "test/nll_naive", "val/loss"):
        assert torch.isfinite(torch.tensor(metrics[name])), name
    assert metrics["test/nll_is"] > 0


def test_load_from_checkpoint_needs_no_arguments(make_cfg, run_train) -> None:
    cfg = make_cfg("model=vae_cnn", *EVAL_SMALL, "test=false")
    run_train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = VAE.load_from_checkpoint(ckpt, weights_only=True)
    state = torch.load(ckpt, weights_only=True)
    model.eval()
    x = torch.rand(4, 1, 28, 28)
    reference = VAE(**state["hyper_parameters"])
    reference.load_state_dict(state["state_dict"])
    reference.eval()
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_resume_from_last_continues_at_the_next_epoch(make_cfg, run_train, tmp_path: Path) -> None:
    first = make_cfg(*EVAL_SMALL, "test=false", output_dir=tmp_path / "first")
    run_train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg(*EVAL_SMALL, "test=false", f"ckpt_path={last}", "trainer.max_epochs=2",
                       output_dir=tmp_path / "resumed")  # fmt: skip
    run_train(resumed)
    rows = read_csv_rows(Path(resumed.paths.output_dir) / "metrics.csv")
    epochs = {row["epoch"] for row in rows if row.get("train/loss")}
    assert epochs == {"1"}  # only the second epoch was trained
    steps = [int(row["step"]) for row in rows if row.get("train/loss")]
    assert min(steps) >= 3  # global step continued from the 3 steps of the first run
    state = torch.load(Path(resumed.paths.output_dir) / "checkpoints" / "last.ckpt",
                       weights_only=True)  # fmt: skip
    # written when training ended, after the second epoch: nothing is left to redo from it
    assert state["epoch"] == 2 and state["global_step"] == 6


def test_eval_only_tests_the_checkpoint(make_cfg, run_train, tmp_path: Path) -> None:
    trained = make_cfg(*EVAL_SMALL, output_dir=tmp_path / "trained")
    reference = run_train(trained)
    ckpt = next((Path(trained.paths.output_dir) / "checkpoints").glob("epoch_*.ckpt"))
    evaluated = make_cfg(*EVAL_SMALL, "train=false", f"ckpt_path={ckpt}", "seed=7",
                         output_dir=tmp_path / "eval")  # fmt: skip
    metrics = run_train(evaluated)
    assert not (Path(evaluated.paths.output_dir) / "checkpoints").exists()
    assert "train/loss" not in metrics
    # -ELBO of the same weights on the same (fixed) test images, up to the sampling noise
    assert metrics["test/loss"] == pytest.approx(reference["test/loss"], rel=0.05)


def test_eval_only_without_checkpoint_is_refused(make_cfg, run_train) -> None:
    with pytest.raises(ValueError, match="train=false evaluates a checkpoint: pass ckpt_path"):
        run_train(make_cfg("train=false"))


def test_seed_zero_is_a_seed(make_cfg, run_train, tmp_path: Path) -> None:
    runs = [
        run_train(make_cfg("seed=0", "test=false", output_dir=tmp_path / f"s0_{i}"))
        for i in range(2)
    ]
    assert runs[0]["val/loss"] == runs[1]["val/loss"]
    other = run_train(make_cfg("seed=1", "test=false", output_dir=tmp_path / "s1"))
    assert other["val/loss"] != runs[0]["val/loss"]


def test_hparams_tab_holds_config_and_final_metrics(make_cfg, run_train) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_cfg(*EVAL_SMALL, "model.z_dim=3")
    metrics = run_train(cfg)
    hparams, scalars = {}, {}
    for events in (Path(cfg.paths.output_dir) / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = acc.Scalars(tag)[-1].value
        try:
            content = acc.PluginTagToContent("hparams")
        except KeyError:  # this event file holds no hparams summary
            content = {}
        for blob in content.values():
            data = plugin_data_pb2.HParamsPluginData.FromString(blob)
            if data.HasField("session_start_info"):
                hparams |= dict(data.session_start_info.hparams)
    assert hparams["model.z_dim"].number_value == 3
    assert hparams["data.binarize"].string_value == "dynamic"
    for name in ("test/loss", "test/nll_is", "val/loss"):  # HPARAMS shows each tag's last value
        assert scalars[name] == pytest.approx(metrics[name], rel=1e-6)
    assert not [tag for tag in scalars if tag.startswith("final/")]


def test_curves_record_validation_only_when_it_ran(make_cfg, run_train) -> None:
    """With validation every 2nd epoch, val/loss appears at epochs 2 and 4 only (not the stale
    value again at 3 and 5); train/loss at every epoch."""
    cfg = make_cfg("model=vae_mlp", *EVAL_SMALL, "test=false", "trainer.max_epochs=5",
                   "trainer.check_val_every_n_epoch=2")  # fmt: skip
    run_train(cfg)
    rows = read_csv_rows(Path(cfg.paths.output_dir) / "figures" / "loss_curves.csv")
    epochs = {
        m: [int(r["epoch"]) for r in rows if r["metric"] == m] for m in ("train/loss", "val/loss")
    }
    assert epochs == {"train/loss": [1, 2, 3, 4, 5], "val/loss": [2, 4]}
