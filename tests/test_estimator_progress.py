"""The VAE's test phase reports its log p(x) estimators chunk by chunk, with identical numbers."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from litlab.callbacks.estimator_progress import clock
from tests.test_vae_math import SIDE, tiny_vae

SMALL_TEST = [
    "model.nll_num_samples=5",
    "model.naive_num_samples=2",
    "model.nll_chunk_size=2",
    "callbacks.estimator_progress.log_every_s=1e-9",
]


def old_log_mean_exp(self, log_weights, num_samples: int, name: str = "") -> torch.Tensor:
    """``VAE._log_mean_exp`` as it was before the chunk listener (commit c99b08f)."""
    chunks = []
    for start in range(0, num_samples, self.hparams.nll_chunk_size):
        chunks.append(log_weights(min(self.hparams.nll_chunk_size, num_samples - start)))
    return torch.cat(chunks).logsumexp(dim=0) - math.log(num_samples)


@pytest.mark.parametrize("estimator", ["importance_sampled_log_px", "naive_log_px"])
def test_estimates_are_those_of_the_code_before_the_listener(monkeypatch, estimator: str) -> None:
    """Same seed -> the same samples, the same chunks (3, 3, 3, 1) and bit-identical estimates,
    with or without a listener, and as the estimator computed them before it had one."""
    torch.manual_seed(0)
    model = tiny_vae(nll_chunk_size=3).eval()
    x = (torch.rand(6, 1, SIDE, SIDE) < 0.5).float()

    def run() -> torch.Tensor:
        torch.manual_seed(1)
        return getattr(model, estimator)(x, 10)

    quiet = run()
    heard: list[tuple[str, int, int]] = []
    model.chunk_listener = lambda *args: heard.append(args)
    listened = run()
    model.chunk_listener = None
    with monkeypatch.context() as patch:
        patch.setattr(type(model), "_log_mean_exp", old_log_mean_exp)
        before = run()
    assert torch.equal(quiet, listened) and torch.equal(quiet, before)
    name = "nll_is" if estimator == "importance_sampled_log_px" else "nll_naive"
    assert heard == [(name, 3, 10), (name, 6, 10), (name, 9, 10), (name, 10, 10)]


def test_clock() -> None:
    assert [clock(s) for s in (0, 59.6, 83.4, 3723)] == ["0:00", "1:00", "1:23", "1:02:03"]


def test_test_phase_logs_its_progress(make_cfg, run_train, caplog) -> None:
    """Bar off (refresh_rate=0): a log line per chunk here (log_every_s tiny), ending at 100%,
    then one line saying what was computed and how long it took."""
    cfg = make_cfg(*SMALL_TEST, "trainer.limit_test_batches=2")
    with caplog.at_level(logging.INFO, logger="litlab.callbacks.estimator_progress"):
        metrics = run_train(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("estimator_progress")]
    progress = [line for line in lines if line.startswith("Test: log p(x) ") and "%" in line]
    # per batch: nll_is at 2, 4, 5 samples, nll_naive at 2: 4 chunks x 2 batches
    assert len(progress) == 8, lines
    assert "log p(x) 14%: batch 1/2, nll_is 2/5 samples" in progress[0]
    assert "log p(x) 100%: batch 2/2, nll_naive 2/2 samples" in progress[-1]
    assert "2 batch(es) with 5 importance + 2 naive samples per image, 2 at a time" in lines[-1]
    assert math.isfinite(metrics["test/nll_is"])


def test_test_bar_shows_the_estimators(make_cfg, run_train, capsys) -> None:
    """Bar on: the test bar's postfix carries the same progress (and no log line does)."""
    cfg = make_cfg(*SMALL_TEST, "callbacks.progress_bar.refresh_rate=1")
    run_train(cfg)
    err = capsys.readouterr()
    assert "log p(x) 100%: batch 1/1, nll_naive 2/2 samples" in err.out + err.err
