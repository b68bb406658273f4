"""The benchmark machinery (``benchmarks/``) on tiny slices; no timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import likelihood, plan, report
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


def test_cuda_runs_the_fast_path_variant_and_writes_its_own_report() -> None:
    assert bench_run.variants_for("vae_mlp", 0, "cuda") == ["a", "b", "g"]
    assert bench_run.variants_for("vae_mlp", 1, "cpu") == ["b", "a", "c"]
    assert bench_run.variants_for("seq2seq", 0, "cuda") == ["a", "b"]
    assert bench_run.parse_args(["--device", "cuda"]).out.name == "RESULTS_GPU.md"
    assert bench_run.parse_args([]).out.name == "RESULTS.md"


def fake_result(model: str, variant: str, repeat: int, seconds: float) -> dict:
    window = "epoch" if model == "vae_mlp" else "steps"
    return {"model": model, "variant": variant, "device": "cuda", "window": window,
            "steps": 330, "timed_steps": 300, "seconds": seconds, "cpu_seconds": seconds,
            "items": 38400, "unit": "images", "items_per_s": 38400 / seconds, "losses": [],
            "peak_rss_mib": 900.0, "peak_gpu_mib": 120.0, "load_before": 0.1,
            "repeat": repeat}  # fmt: skip


def test_gpu_report_has_the_fast_path_row(tmp_path: Path) -> None:
    """A CUDA run's report: the (g) row against the plain loop and the 0.7 s target, peak GPU
    memory per study, the GPU column in the raw table; no CPU notes."""
    results = [fake_result("vae_mlp", v, r, s) for r in range(2)
               for v, s in (("a", 1.5), ("b", 1.4), ("g", 0.6))]  # fmt: skip
    results += [fake_result("vae_cnn", v, 0, s) for v, s in (("a", 2.0), ("b", 2.0))]
    run = {"args": {"device": "cuda", "threads": "None", "quick": "False", "repeats": "2"},
           "seconds": 60.0, "load_start": [0.1], "load_end": [0.2], "results": results,
           "startup": None, "date": "today", "machine": ["- GPU: test"]}  # fmt: skip
    out = tmp_path / "RESULTS_GPU.md"
    report.write_report(run, out)
    text = out.read_text()
    assert "| 0.600 s/epoch | 0.429 | 0.400 | 120 MiB | met |" in text
    assert "| VAE-CNN | 120 MiB | 120 MiB | – |" in text
    assert "peak GPU MiB" in text and "not yet measured" not in text
    assert "### Threads" not in text  # benchmarks/notes.md is about the CPU run


def test_plan_sizes_a_job_to_the_seconds_left() -> None:
    """benchmarks.plan: start + epochs x (steps x step + val / val_every) + val + test <= seconds."""
    times = {"launched": 0.0, "first_batch": 10.0, "warmup_steps": 10, "steps": 110,
             "warm": 11.0, "last": 12.0, "epoch_batches": 500, "val_s": [2.0],
             "test_s": 1.0, "test_batches": 1, "test_batches_total": 10}  # fmt: skip
    p = plan.phases(times)
    assert p == {"start_s": 10.0, "step_s": 0.01, "epoch_batches": 500, "val_s": 2.0,
                 "test_s": 10.0}  # fmt: skip
    epochs, epoch_s = plan.epochs_that_fit(100.0, p, max_epochs=40, val_every=1, margin=0.0)
    assert epoch_s == pytest.approx(7.0) and epochs == 11  # (100 - 22) / 7
    assert plan.epochs_that_fit(100.0, p, max_epochs=5)[0] == 5  # the config's epochs fit
    assert plan.epochs_that_fit(10.0, p, max_epochs=40)[0] == 1  # at least one
    assert plan.epochs_that_fit(100.0, p, max_epochs=40, val_every=5, margin=0.0)[0] == 14


def test_startup_is_reported_against_the_bare_import() -> None:
    phases = {"import torch": 3.0, "data": 0.1}
    run = {"totals": [4.6, 4.4, 4.5], "total": 4.5, "cpu": [4.0, 4.1, 4.2], "bare": [4.0, 4.1, 3.9],
           "bare_cpu": [3.8, 3.9, 3.7], "ratio": 1.125, "cpu_ratio": 1.08, "phases": phases}  # fmt: skip
    text = "\n".join(report.startup_table(run))
    assert "**1.125** (CPU seconds: 1.080); target ≤ 1.15: met" in text
    assert "| data | 0.10 |" in text
    old_run = {k: run[k] for k in ("totals", "total", "phases")}  # RESULTS.json before issue 14
    assert "bare import" not in "\n".join(report.startup_table(old_run))


def test_likelihood_benchmark_times_every_chunk_against_the_baseline(tmp_path: Path) -> None:
    """Tiny sizes: every variant timed, the baseline's speed-up 1, the estimates checked equal
    inside (a variant computing something else would raise), Markdown and JSON written."""
    out = tmp_path / "likelihood.md"
    likelihood.main(["--images", "20", "--samples", "8", "--chunks", "4", "1", "--repeats", "2",
                     "--threads", "1", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert "litlab, chunk 4" in text and "litlab, chunk 1" in text
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["speed-up"][likelihood.BASELINE] == 1.0
    assert all(len(secs) == 2 for secs in result["seconds"].values())
