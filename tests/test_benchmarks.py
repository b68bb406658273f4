"""The benchmark machinery (``benchmarks/``) on tiny slices; no timing assertions."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import run as bench_run
from benchmarks.measure import measure
from tests.conftest import run_python

WARMUP, TIMED = 2, 3


def losses(model: str, variant: str, data_dir: Path, tmp_path: Path, **kwargs: str) -> dict:
    return measure(model, variant, str(data_dir), warmup=WARMUP, timed=TIMED,
                   output_dir=tmp_path / variant, record_losses=True, **kwargs)  # fmt: skip


@pytest.mark.parametrize(
    "model",
    [
        "vae_mlp",
        pytest.param("vae_cnn", marks=pytest.mark.slow),
        pytest.param("seq2seq", marks=pytest.mark.slow),
        pytest.param("transformer", marks=pytest.mark.slow),
    ],
)
def test_plain_loop_does_the_same_work_as_litlab(model: str, data_dir: Path, tmp_path: Path):
    """Same config and seed: the plain loop and train.py take the same optimiser steps on the
    same batches (same item counts) and reach the same losses."""
    litlab = losses(model, "a", data_dir, tmp_path)
    plain = losses(model, "b", data_dir, tmp_path)
    assert litlab["steps"] == plain["steps"] == WARMUP + TIMED
    assert litlab["items"] == plain["items"] > 0
    assert plain["losses"] == pytest.approx(litlab["losses"], rel=1e-5)


def test_canonical_pipeline_sees_the_same_images(data_dir: Path, tmp_path: Path):
    """(c) torchvision MNIST + ToTensor + DataLoader gives the plain loop's batches and losses."""
    root = bench_run.unpack_mnist(str(data_dir), tmp_path / "mnist")
    plain = losses("vae_mlp", "b", data_dir, tmp_path)
    canonical = losses("vae_mlp", "c", data_dir, tmp_path, canonical_root=root)
    assert canonical["losses"] == pytest.approx(plain["losses"], rel=1e-5)


def test_quick_run_writes_results(data_dir: Path, tmp_path: Path):
    """``--quick --inline``: every section of RESULTS.md, GPU rows left unmeasured."""
    out = tmp_path / "RESULTS.md"
    bench_run.main(["--quick", "--inline", "--models", "vae_mlp", "--startup-repeats", "0",
                    "--data-dir", str(data_dir), "--out", str(out)])  # fmt: skip
    text = out.read_text()
    for expected in ("## Machine", "| VAE-MLP |", "(c) torchvision MNIST", "not yet measured"):
        assert expected in text
    assert out.with_suffix(".json").is_file()


@pytest.mark.slow
def test_quick_run_in_fresh_processes(data_dir: Path, tmp_path: Path):
    """``python -m benchmarks.run --quick``: one process per measurement, start-up included."""
    out = tmp_path / "RESULTS.md"
    args = ["-m", "benchmarks.run", "--quick", "--models", "vae_mlp", "--out", str(out)]
    proc = run_python(args, data_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "to its first training batch" in out.read_text()
