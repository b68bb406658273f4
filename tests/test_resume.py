"""A run killed with SIGKILL and resumed from its last checkpoint ends bit-for-bit where the
uninterrupted run ends; checkpoints are written atomically; the RNG and data order are restored."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from datamodules.samplers import EpochShuffle, InOrder
from litlab.checkpoints import AtomicCheckpointIO, load_checkpoint
from tests.conftest import run_python, sigkill_when_paused

TOTAL_STEPS = 16  # 6 batches an epoch: the kill (step 10) and the resume (step 8) are mid-epoch
COMMON = [
    f"trainer.max_steps={TOTAL_STEPS}",
    "trainer.max_epochs=-1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "test=false",
    "seed=7",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.step_checkpoint.every_n_train_steps=4",
    "callbacks.finite_loss.check_every_n_steps=1",
]
STUDIES = {
    "vae": ["model=vae_mlp", "data.batch_size=64", "data.eval_batch_size=500"],
    "seq2seq": [
        "model=seq2seq_attn", "model.hidden_dim=32", "model.encoder.embed_dim=32",
        "model.decoder.embed_dim=32", "model.teacher_forcing_ratio=0.5", "data.batch_size=32",
        "data.eval_batch_size=64",
        # T_max follows trainer.max_epochs, which is -1 (unbounded) here: a cosine needs a length
        "model.scheduler.T_max=3",
    ],
    "transformer_lm": [
        "model=transformer_lm", "model.d_model=32", "model.num_heads=2", "model.d_ff=64",
        "model.num_layers=2", "model.dropout=0.2", "model.scheduler.warmup_steps=5",
        "model.scheduler.total_steps=16", "data.batch_size=8", "data.eval_batch_size=8",
        "data.bptt=16", "callbacks.grad_probe.init_batches=2",
    ],
}  # fmt: skip


def killed_mid_run(args: list[str], run_dir: Path, data_dir: Path, step: int) -> None:
    """Start ``train.py``, wait until it reaches ``step`` (a test callback pauses it there), then
    SIGKILL it: no handler, no clean-up, like a node failure."""
    marker = run_dir.parent / f"{run_dir.name}.paused"
    pause = [
        "+callbacks.pause._target_=tests.callbacks.PauseAtStep",
        f"+callbacks.pause.step={step}",
        f"+callbacks.pause.marker={marker}",
    ]
    cmd = ["train.py", *args, *pause, f"hydra.run.dir={run_dir}"]
    sigkill_when_paused(cmd, marker, data_dir, f"step {step}")


def train_to_end(args: list[str], run_dir: Path, data_dir: Path) -> dict:
    result = run_python(["train.py", *args, f"hydra.run.dir={run_dir}"], data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize(
    "study",
    [
        "vae",
        "transformer_lm",
        # passes too (bucketed batches, teacher forcing 0.5); ~2 min of CPU: `make test-all`
        pytest.param("seq2seq", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_bit_for_bit(study: str, tmp_path: Path, data_dir: Path) -> None:
    args = [*STUDIES[study], *COMMON]
    uninterrupted = train_to_end(args, tmp_path / "a", data_dir)

    killed_mid_run(args, tmp_path / "b", data_dir, step=10)
    saved = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 8  # steps 9-10 were lost with the process
    resumed = train_to_end(
        [*args, f"ckpt_path={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "c",
        data_dir,
    )  # fmt: skip

    assert uninterrupted["global_step"] == resumed["global_step"] == TOTAL_STEPS
    rows = list(csv.DictReader((tmp_path / "c" / "metrics.csv").open()))
    logged = {
        row["epoch"] for row in rows for k, v in row.items() if k.startswith("train/loss") and v
    }
    assert "1" in logged  # the resumed epoch's training loss is logged
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    for state_a, state_b in zip(
        uninterrupted["optimizer_states"][0]["state"].values(),
        resumed["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        for key in state_a:
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key


def test_checkpoint_write_killed_midway_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def dies_halfway(obj, f, *args, **kwargs) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # stands in for the kill

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_training_order_depends_on_seed_and_epoch_only() -> None:
    data = list(range(100))
    first = EpochShuffle(data, seed=3)
    first.set_epoch(2)
    order = list(first)
    again = EpochShuffle(data, seed=3)
    again.set_epoch(2)
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(again) == order
    again.set_epoch(3)
    assert list(again) != order
    resumed = EpochShuffle(data, seed=3)
    resumed.set_epoch(2)
    resumed.start = 40
    assert list(resumed) == order[40:]
    assert list(resumed) == order  # the skip applies to one pass only
    in_order = InOrder(data)
    in_order.start = 95
    assert list(in_order) == [95, 96, 97, 98, 99]


def test_same_seed_deterministic_mode_gives_identical_metrics(
    make_cfg, run_train, tmp_path: Path
) -> None:
    """``seed=S trainer.deterministic=true`` twice: every metric equal, to the last bit."""
    overrides = ["seed=3", "trainer.deterministic=true", "model.nll_num_samples=5",
                 "model.naive_num_samples=5", "data.eval_batch_size=500"]  # fmt: skip
    first = run_train(make_cfg(*overrides, output_dir=tmp_path / "first"))
    second = run_train(make_cfg(*overrides, output_dir=tmp_path / "second"))
    assert first.keys() == second.keys() and "test/nll_is" in first
    timings = {name for name in first if name.startswith("time/")}  # wall clock, not results
    assert {k: v for k, v in first.items() if k not in timings} == {
        k: v for k, v in second.items() if k not in timings
    }
    different_seed = run_train(make_cfg(*overrides[1:], "seed=4", output_dir=tmp_path / "third"))
    assert different_seed["val/loss"] != first["val/loss"]
