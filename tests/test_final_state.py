"""What train.py does around a fit: a fit stopped by ``trainer.max_steps`` between two step
checkpoints still leaves its final weights in ``last.ckpt`` (issue 13.5); which weights it tests
(``test_ckpt``); the warning for bf16 autocast on a CPU that emulates it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from litlab.checkpoints import load_checkpoint


def test_max_steps_between_step_checkpoints_saves_the_final_state(
    make_cfg, run_train, tmp_path: Path
) -> None:
    cfg = make_cfg(
        "trainer.max_steps=7", "trainer.max_epochs=-1", "trainer.limit_train_batches=5", "test=false",
        "callbacks.step_checkpoint.every_n_train_steps=2", "model.encoder.hidden_dims=[16]",
        "model.decoder.hidden_dims=[16]", output_dir=tmp_path / "run",
    )  # fmt: skip
    run_train(cfg)
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 7  # without save_final_state: 6, the last step checkpoint
    assert "optimizer_states" in last  # a full checkpoint: the run can be resumed from it


def test_test_ckpt_picks_the_best_checkpoint_or_the_final_weights() -> None:
    """``test_ckpt=best`` tests the best checkpoint's file; ``last`` (and a fit that saved no best
    checkpoint) the weights in memory, which ``trainer.test(ckpt_path=None)`` uses."""
    from types import SimpleNamespace

    import train as train_script

    trainer = SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path="b/epoch_3.ckpt"))
    assert train_script.fitted_checkpoint(trainer, "best") == "b/epoch_3.ckpt"
    assert train_script.fitted_checkpoint(trainer, "last") is None
    unsaved = SimpleNamespace(checkpoint_callback=None)
    assert train_script.fitted_checkpoint(unsaved, "best") is None


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch, caplog, native: bool) -> None:
    """``trainer.precision=bf16-mixed`` on the CPU: a warning only where bf16 is emulated."""
    import lightning as L
    import torch

    import train as train_script

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for precision, warned in (("bf16-mixed", not native), ("32-true", False)):
        caplog.clear()
        trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False)
        with caplog.at_level(logging.WARNING):
            train_script.warn_emulated_bf16(trainer)
        assert ("without native bfloat16" in caplog.text) == warned, (precision, caplog.text)
        if warned:
            assert "trainer.precision=32-true" in caplog.text
