"""A fit stopped by ``trainer.max_steps`` between two step checkpoints still leaves its final
weights in ``last.ckpt`` (issue 13.5)."""

from __future__ import annotations

from pathlib import Path

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
