"""One measurement, meant to run in a fresh process so that its timings and peak memory are its
own: ``python -m benchmarks.measure --model vae_mlp --variant a --data-dir DIR``.

Variants: ``a`` litlab's path (``train.train(cfg)`` of ``train.py`` on the composed config, with a
:class:`~benchmarks.clock.BenchClock` callback added), ``b`` the plain loop of
:mod:`benchmarks.plain_loops` on the same tensors, ``c`` the plain loop fed by the canonical
torchvision pipeline (MNIST studies only; needs ``--mnist-root``), ``g`` litlab's GPU fast path
(``a`` with ``trainer=gpu model.compile=true``: bf16 autocast, fused optimiser, inductor; the
compilation happens in the warm-up steps). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

import train as litlab_train
from benchmarks.clock import StepClock
from benchmarks.plain_loops import plain_fit, plain_setup, steps_per_epoch
from benchmarks.workloads import WORKLOADS, Workload, bench_config

VARIANTS = {
    "a": "litlab train.py",
    "b": "plain loop",
    "c": "canonical pipeline",
    "g": "litlab train.py trainer=gpu model.compile=true",
}


def build_data_and_model(cfg: DictConfig) -> tuple[Any, Any]:
    """Seed, data module (prepared and set up) and model, in ``train.py``'s order."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False, **litlab_train.data_facts(datamodule))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, model


def epoch_steps(cfg: DictConfig) -> int:
    """Optimiser steps in one training epoch of the configured data."""
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return steps_per_epoch(datamodule)


def measure_litlab(
    workload: Workload, cfg: DictConfig, warmup: int, timed: int, device: str, record_losses: bool
) -> dict[str, Any]:
    """(a): ``train.train(cfg)`` stopping after ``warmup + timed`` steps, timed by a callback."""
    out = Path(cfg.paths.output_dir) / "bench_clock.json"
    with open_dict(cfg):
        cfg.trainer.max_steps = warmup + timed
        cfg.callbacks = {
            "bench_clock": {
                "_target_": "benchmarks.clock.BenchClock",
                "out": str(out),
                "clock": {
                    "_target_": "benchmarks.clock.StepClock",
                    "warmup_steps": warmup,
                    "timed_steps": timed,
                    "unit": workload.unit,
                    "device": device,
                    "record_losses": record_losses,
                },
            }
        }
    litlab_train.train(cfg)
    return json.loads(out.read_text())


def measure_plain(
    workload: Workload,
    cfg: DictConfig,
    warmup: int,
    timed: int,
    device: str,
    record_losses: bool,
    canonical_root: str | None = None,
) -> dict[str, Any]:
    """(b), or (c) with ``canonical_root``: the plain loop on the same config, seed and data."""
    datamodule, model = build_data_and_model(cfg)
    setup = plain_setup(cfg, datamodule, model, torch.device(device), canonical_root)
    clock = StepClock(warmup, timed, workload.unit, device, record_losses)
    plain_fit(setup, clock)
    return clock.result()


def peak_memory(device: str) -> dict[str, float]:
    """Peak resident set size of this process (MiB) and, on CUDA, peak allocated GPU memory."""
    peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        peak["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def measure(
    model: str,
    variant: str,
    data_dir: str,
    device: str = "cpu",
    warmup: int | None = None,
    timed: int | None = None,
    output_dir: Path | None = None,
    canonical_root: str | None = None,
    record_losses: bool = False,
) -> dict[str, Any]:
    """Run one variant of one workload; ``warmup`` / ``timed`` default to the workload's."""
    workload = WORKLOADS[model]
    if variant == "c" and not canonical_root:
        raise ValueError("variant c needs canonical_root (unpacked MNIST for torchvision)")
    with tempfile.TemporaryDirectory(prefix="litlab-bench-") as tmp:
        cfg = bench_config(workload, Path(output_dir or tmp), data_dir, device, variant == "g")
        default_warmup, default_timed = workload.window(device)
        warmup = warmup or default_warmup
        one_epoch = timed is None and default_timed is None
        timed = epoch_steps(cfg) if one_epoch else timed or default_timed
        if variant in ("a", "g"):
            result = measure_litlab(workload, cfg, warmup, timed, device, record_losses)
        else:
            root = canonical_root if variant == "c" else None
            result = measure_plain(workload, cfg, warmup, timed, device, record_losses, root)
    window = "epoch" if one_epoch else "steps"
    return {"model": model, "variant": variant, "device": device, "window": window, **result,
            **peak_memory(device)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--timed", type=int, default=None, help="timed steps (default: workload)")
    parser.add_argument("--canonical-root", default=None, help="unpacked MNIST for variant c")
    args = parser.parse_args(argv)
    result = measure(args.model, args.variant, args.data_dir, args.device, args.warmup,
                     args.timed, canonical_root=args.canonical_root)  # fmt: skip
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
