"""Where litlab's training step spends its time: ``python -m benchmarks.profile vae_mlp``.

Runs the (a) path of :mod:`benchmarks.measure` with Lightning's ``SimpleProfiler`` and prints its
report (mean and total time of every hook and loop action) beside the plain loop's time for the
same window, so the difference can be read off per action.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from omegaconf import open_dict

from benchmarks.measure import measure, measure_litlab
from benchmarks.workloads import WORKLOADS, bench_config


def profile(model: str, data_dir: str, warmup: int, timed: int) -> str:
    """SimpleProfiler report of ``timed + warmup`` litlab steps, plus both sides' window times."""
    workload = WORKLOADS[model]
    plain = measure(model, "b", data_dir, warmup=warmup, timed=timed)
    with tempfile.TemporaryDirectory(prefix="litlab-profile-") as tmp:
        cfg = bench_config(workload, Path(tmp), data_dir)
        with open_dict(cfg):
            cfg.trainer.profiler = {"_target_": "lightning.pytorch.profilers.SimpleProfiler",
                                    "dirpath": tmp, "filename": "simple"}  # fmt: skip
        litlab = measure_litlab(workload, cfg, warmup, timed, "cpu", False)
        report = next(Path(tmp).glob("*simple.txt")).read_text()
    ms = {name: r["seconds"] / timed * 1000 for name, r in (("a", litlab), ("b", plain))}
    return (f"{model}: {timed} steps after {warmup}; per step (a) litlab {ms['a']:.2f} ms "
            f"(profiled), (b) plain loop {ms['b']:.2f} ms\n{report}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(WORKLOADS))
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "data"))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--timed", type=int, default=200)
    args = parser.parse_args()
    print(profile(args.model, args.data_dir, args.warmup, args.timed))


if __name__ == "__main__":
    main()
