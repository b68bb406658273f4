"""``python -m benchmarks.run`` (``make bench``): litlab's path vs a plain loop, and start-up.

For every study (VAE-MLP, VAE-CNN, Seq2Seq, Transformer LM) and every repetition, each variant
runs in its own fresh process (``benchmarks.measure``): (a) litlab's ``train.py`` path, (b) the
plain PyTorch loop, and for the VAE-MLP (c) the canonical torchvision pipeline (on the CPU only:
its cost is PIL and the per-sample collate, whatever the device) or, on CUDA, (g) litlab's GPU fast
path (``trainer=gpu model.compile=true``). The variants of a
repetition run back to back (their order alternating between repetitions) so that load from other
jobs on the machine hits both sides alike; ratios are taken within a repetition, then the median
over repetitions is reported. Results: ``benchmarks/RESULTS.md`` (and the raw numbers as JSON); on CUDA
``benchmarks/RESULTS_GPU.md``, so that a GPU run never replaces the CPU figures.

    python -m benchmarks.run [--quick] [--models vae_mlp ...] [--repeats N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import startup
from benchmarks.report import machine, write_report
from benchmarks.workloads import ROOT, WORKLOADS

QUICK_WINDOW = (2, 5)  # --quick: warm-up and timed steps


def unpack_mnist(data_dir: str, dest: Path) -> str:
    """torchvision's MNIST wants unpacked IDX files in ``<root>/MNIST/raw``; returns the root."""
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted((Path(data_dir) / "MNIST" / "raw").glob("*-ubyte.gz")):
        with gzip.open(gz, "rb") as src, open(raw / gz.stem, "wb") as out:
            shutil.copyfileobj(src, out)
    return str(dest)


def child_env(data_dir: str, threads: int | None) -> dict[str, str]:
    """Environment of the measurement processes (``threads``: OMP/MKL threads, None = default)."""
    env = dict(os.environ, DATA_DIR=data_dir, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_child(kwargs: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """:func:`benchmarks.measure.measure` in a fresh ``python -m benchmarks.measure`` process."""
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in kwargs.items() if value]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", *argv], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"benchmarks.measure {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def variants_for(model: str, repeat: int, device: str = "cpu") -> list[str]:
    """The variants of one repetition, order alternating between repetitions."""
    names = ["a", "b"] if repeat % 2 == 0 else ["b", "a"]
    if WORKLOADS[model].canonical and not device.startswith("cuda"):  # (c) is CPU-bound (PIL)
        names.append("c")
    if WORKLOADS[model].fast_path and device.startswith("cuda"):
        names.append("g")
    return names


def measure_all(args: argparse.Namespace, env: dict[str, str], mnist_root: str) -> list[dict]:
    """Every repetition of every variant of every model, interleaved (module docstring)."""
    results = []
    for repeat in range(args.repeats):
        for model in args.models:
            for variant in variants_for(model, repeat, args.device):
                kwargs = {"model": model, "variant": variant, "data_dir": args.data_dir,
                          "device": args.device, "canonical_root": mnist_root}  # fmt: skip
                if args.quick:
                    kwargs |= dict(zip(("warmup", "timed"), QUICK_WINDOW, strict=True))
                load = os.getloadavg()[0]
                if args.inline:
                    from benchmarks.measure import measure  # torch, lightning: only when inline

                    result = measure(**kwargs)
                else:
                    result = run_child(kwargs, env, args.timeout)
                result["load_before"] = load
                result["repeat"] = repeat
                results.append(result)
                print(f"[{repeat}] {model:12s} {variant}  {result['seconds']:8.3f} s  "
                      f"{result['items_per_s']:10.0f} {result['unit']}/s  "
                      f"{result['peak_rss_mib']:7.0f} MiB  load {result['load_before']:.2f}",
                      flush=True)  # fmt: skip
    return results


def measure_startup(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Over ``args.startup_repeats`` repetitions, each the bare ``import torch, lightning``, then
    ``python train.py`` to its first batch, then the phases: the medians, and the median of the
    per-repetition ratios start-up / bare import (wall and CPU seconds)."""
    totals, cpus, bares, bare_cpus, phases = [], [], [], [], []
    for _ in range(args.startup_repeats):
        bare = startup.bare_import(env)
        with tempfile.TemporaryDirectory(prefix="litlab-startup-") as tmp:
            run = startup.total(Path(tmp), env)
        with tempfile.TemporaryDirectory(prefix="litlab-startup-") as tmp:
            phases.append(startup.breakdown(Path(tmp), args.data_dir, env))
        totals.append(run["seconds"])
        cpus.append(run["cpu"])
        bares.append(bare["seconds"])
        bare_cpus.append(bare["cpu"])
        print(f"start-up {totals[-1]:.2f} s ({cpus[-1]:.2f} s CPU), bare import {bares[-1]:.2f} s "
              f"({bare_cpus[-1]:.2f} s CPU), phases sum {sum(phases[-1].values()):.2f} s")  # fmt: skip
    names = list(phases[0])
    return {
        "totals": totals,
        "total": statistics.median(totals),
        "cpu": cpus,
        "bare": bares,
        "bare_cpu": bare_cpus,
        "ratio": statistics.median(t / b for t, b in zip(totals, bares, strict=True)),
        "cpu_ratio": statistics.median(c / b for c, b in zip(cpus, bare_cpus, strict=True)),
        "phases": {name: statistics.median(p[name] for p in phases) for name in names},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny windows {QUICK_WINDOW}, 1 repetition: checks the machinery",
    )
    parser.add_argument("--models", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per process (default: torch's default)",
    )
    parser.add_argument("--startup-repeats", type=int, default=None, help="default 3 (0: skip)")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT / "data")))
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default benchmarks/RESULTS.md, RESULTS_GPU.md on CUDA",
    )
    parser.add_argument(
        "--inline",
        action="store_true",
        help="measure in this process (tests; peak memory is then not per run)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="write the report from a saved run (RESULTS.json), measure nothing",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    args = parser.parse_args(argv)  # fmt: skip
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.startup_repeats is None:
        args.startup_repeats = 1 if args.quick else 3
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.out is None:
        name = "RESULTS_GPU.md" if args.device.startswith("cuda") else "RESULTS.md"
        args.out = ROOT / "benchmarks" / name
    return args


def main(argv: list[str] | None = None) -> Path:
    """Measure, then write the report; returns its path."""
    args = parse_args(argv)
    if args.from_json:  # only rewrite the report (e.g. after editing benchmarks/notes.md)
        write_report(json.loads(args.from_json.read_text()), args.out)
        return args.out
    env = child_env(args.data_dir, args.threads)
    started = time.time()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="litlab-mnist-") as tmp:
        mnist_root = unpack_mnist(args.data_dir, Path(tmp))
        results = measure_all(args, env, mnist_root)
    startup_result = measure_startup(args, env) if args.startup_repeats > 0 else None
    run = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "seconds": time.time() - started,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "results": results,
        "startup": startup_result,
        # when and on what it was measured: a report rewritten later (--from-json) keeps these
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(run, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=1))
    print(f"wrote {args.out} ({run['seconds']:.0f} s)")
    return args.out


if __name__ == "__main__":
    main()
