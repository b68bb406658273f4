"""The NaN guard (issue 13.3): non-finite loss or weights stop the run with one message before
any other callback uses them, whatever the epoch length; no checkpoint ever holds weights that
are non-finite or give a non-finite loss; such a checkpoint is refused for evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from litlab.checkpoints import load_checkpoint, non_finite_tensor
from litlab.errors import CheckpointError, ConfigError, NonFiniteLossError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMALL = ["model.encoder.hidden_dims=[16]", "model.decoder.hidden_dims=[16]", "test=false",
         "trainer.max_epochs=2", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2",
         "model.optimizer._target_=torch.optim.SGD"]  # fmt: skip


def finite(path: str | Path) -> bool:
    return non_finite_tensor(load_checkpoint(path)["state_dict"]) is None


def test_short_epoch_nan_stops_before_the_figures(make_cfg, run_train) -> None:
    """NaN less than check_every_n_steps before the epoch ends: the guard speaks first (the VAE
    figures would otherwise sample Bernoulli pixels from NaN probabilities)."""
    cfg = make_cfg(
        *SMALL, "model.optimizer.lr=1e12", "callbacks.finite_loss.check_every_n_steps=50"
    )
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step \d \(epoch 0\)"):
        run_train(cfg)


def test_overflowing_weights_are_never_checkpointed(make_cfg, run_train, tmp_path: Path) -> None:
    """SGD at lr 3e38: the loss before the first update is finite, the weights after it are
    ~1e38; the step checkpoint of that step is refused, so the kept one evaluates finite."""
    cfg = make_cfg(*SMALL, "model.optimizer.lr=3e38", "callbacks.step_checkpoint.every_n_train_steps=1",
                   output_dir=tmp_path / "run")  # fmt: skip
    with pytest.raises(NonFiniteLossError) as err:
        run_train(cfg)
    message = str(err.value)
    assert "non-finite" in message or "loss became" in message
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        assert finite(ckpt), ckpt


def test_a_checkpoint_whose_weights_gave_the_bad_loss_is_rolled_back(
    make_cfg, run_train, tmp_path: Path
) -> None:
    """Step checkpoints every step; the weights are blown up just before step 3's batch, so the
    checkpoint of step 3 is the last one written before the bad loss: it must not be kept."""
    cfg = make_cfg(*SMALL, "model.optimizer.lr=1e-3", "callbacks.step_checkpoint.every_n_train_steps=1",
                   "+callbacks.poison._target_=tests.callbacks.PoisonWeights", "+callbacks.poison.step=3",
                   output_dir=tmp_path / "run")  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"loss became (nan|inf) at step 4") as err:
        run_train(cfg)
    kept = str(err.value).split("Last good checkpoint: ")[1].split(" (lower")[0]
    assert Path(kept).name == "last.ckpt" and finite(kept)
    assert load_checkpoint(kept)["global_step"] == 2  # rolled back from step 3
    metrics = run_train(make_cfg("train=false", f"ckpt_path={kept}", *SMALL[:2],
                                 output_dir=tmp_path / "eval"))  # fmt: skip
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_evaluating_non_finite_weights_is_refused(make_cfg, run_train, tmp_path: Path) -> None:
    checkpoint = torch.load(FIXTURES / "vae_mlp.ckpt", weights_only=True)
    name = next(n for n, t in checkpoint["state_dict"].items() if t.is_floating_point())
    checkpoint["state_dict"][name][0] = float("nan")
    path = tmp_path / "nan.ckpt"
    torch.save(checkpoint, path)
    cfg = make_cfg("train=false", f"ckpt_path={path}", "model.z_dim=2",
                   "model.encoder.hidden_dims=[8]", "model.decoder.hidden_dims=[8]")  # fmt: skip
    with pytest.raises(CheckpointError, match=rf"weights are not finite: {name} \(nan\)"):
        run_train(cfg)


def test_a_learning_rate_beyond_float32_is_refused_before_training(make_cfg, run_train) -> None:
    with pytest.raises(ConfigError, match=r"model.optimizer.lr=1e\+39: must be < 3.40282e\+38"):
        run_train(make_cfg("model.optimizer.lr=1e39"))


def test_non_finite_tensor_names_the_culprit() -> None:
    ok = {"a": torch.ones(3), "step": torch.tensor(3)}
    assert non_finite_tensor(ok) is None
    assert non_finite_tensor({**ok, "b": torch.tensor([1.0, float("inf")])}) == "b (inf)"
    assert non_finite_tensor({**ok, "c": torch.full((4,), 3e38)}) == (
        "c (values overflowing float32)"
    )


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(tmp_path: Path, monkeypatch) -> None:
    """torch.save on a full disk fails inside its zip writer ("unexpected pos ..."): the error is
    named for what it is, with the file, and the previous last.ckpt is untouched."""
    import shutil

    from litlab.checkpoints import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    path.write_bytes(b"previous")

    def full_disk(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 4354816 vs 4354708"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError, match="No space left on device") as err:
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, path)
    assert err.value.filename == str(path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
