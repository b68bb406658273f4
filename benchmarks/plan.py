"""How many epochs of a run fit in the seconds left, from a short probe of the same run.

``scripts/gpu_check.sh`` starts each long job twice: a probe (the job's own config, one epoch cut
to a few hundred steps, one validation, a test on one batch, with
:class:`~benchmarks.clock.PhaseTimes`), then the job itself with ``trainer.max_epochs`` = the
epochs that fit, so that its schedule (a cosine over ``trainer.max_epochs``) ends inside the
time left instead of being cut off half-way. The probe runs while the GPU is shared as it will be
during the job, so its step time is that of the job (an overestimate once other jobs end).

    python -m benchmarks.plan PROBE.json SECONDS --max-epochs N [--val-every K] [--csv FILE --name NAME]

prints the number of epochs (at least 1, at most ``--max-epochs``) and appends the sizing to
``--csv``. The model of a run's wall time::

    start + epochs x (batches_per_epoch x step + validation / val_every) + validation + test

with ``start`` the probe's seconds from launch to its first training batch (imports, data, model,
sanity check), ``step`` its seconds per training step after ``warmup_steps``, ``validation`` one
full validation (one more is counted for a last, partial validation period) and ``test`` its
one-batch test scaled to the whole split, plus ``--margin`` (a fraction of the seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path


def phases(times: dict) -> dict[str, float]:
    """Seconds of each phase of a probe run (:class:`~benchmarks.clock.PhaseTimes`' JSON)."""
    timed_steps = times["steps"] - times["warmup_steps"]
    if timed_steps < 1 or "warm" not in times:
        raise ValueError(f"the probe ran {times['steps']} steps, fewer than its warm-up + 1")
    test_scale = (times.get("test_batches_total") or 1) / max(1, times.get("test_batches") or 1)
    return {
        "start_s": times["first_batch"] - times["launched"],
        "step_s": (times["last"] - times["warm"]) / timed_steps,
        "epoch_batches": times["epoch_batches"],
        "val_s": max(times["val_s"], default=0.0),
        "test_s": times.get("test_s", 0.0) * test_scale,
    }


def epochs_that_fit(
    seconds: float, p: dict[str, float], max_epochs: int, val_every: int = 1, margin: float = 0.05
) -> tuple[int, float]:
    """The epochs that fit in ``seconds`` (module docstring) and the seconds one epoch takes."""
    epoch_s = p["epoch_batches"] * p["step_s"] + p["val_s"] / val_every
    fixed = p["start_s"] + p["val_s"] + p["test_s"] + margin * seconds
    epochs = math.floor((seconds - fixed) / epoch_s) if epoch_s > 0 else max_epochs
    return max(1, min(max_epochs, epochs)), epoch_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", type=Path, help="the probe's PhaseTimes JSON")
    parser.add_argument("seconds", type=float, help="wall seconds the job may take, start to end")
    parser.add_argument("--max-epochs", type=int, required=True, help="the config's epochs")
    parser.add_argument("--val-every", type=int, default=1, help="trainer.check_val_every_n_epoch")
    parser.add_argument("--margin", type=float, default=0.05, help="fraction of seconds kept")
    parser.add_argument("--csv", type=Path, default=None, help="append the sizing to this CSV")
    parser.add_argument("--name", default="", help="the job's name in the CSV")
    args = parser.parse_args(argv)
    p = phases(json.loads(args.probe.read_text()))
    epochs, epoch_s = epochs_that_fit(args.seconds, p, args.max_epochs, args.val_every, args.margin)
    if args.csv is not None:
        row = {"job": args.name, "seconds": round(args.seconds), **p, "epoch_s": epoch_s,
               "max_epochs": args.max_epochs, "epochs": epochs}  # fmt: skip
        new = not args.csv.exists()
        with open(args.csv, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in row.items()})
    print(epochs)
    return epochs


if __name__ == "__main__":
    main()
