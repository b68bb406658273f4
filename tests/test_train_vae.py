"""``train(cfg)`` end to end on CPU for the VAEs, with tiny limits and the real MNIST files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.vae import VAE

EVAL_SMALL = ["model.nll_num_samples=20", "model.naive_num_samples=20"]


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
