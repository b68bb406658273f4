"""Summarise finished runs from their ``metrics.csv``: last epoch's train/val values, every test
metric and the timing, one row per run, as a Markdown table.

    python -m litlab.analysis.run_summary logs/vae_mlp_seed/runs/<run> [more run folders ...]
    python -m litlab.analysis.run_summary <runs> --epoch 19   # train/val as logged in epoch 19 (0-based)
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def last_values(metrics_csv: Path, epoch: int | None = None) -> dict[str, float]:
    """The last logged value of every column of a Lightning ``metrics.csv``; with ``epoch``, the
    train/val values logged in that (0-based) epoch, test and timing values as last logged."""
    values: dict[str, float] = {}
    with open(metrics_csv) as handle:
        for row in csv.DictReader(handle):
            in_epoch = epoch is None or row.get("epoch") == str(epoch)
            for name, value in row.items():
                if value in ("", None):
                    continue
                if in_epoch or not name.startswith(("train/", "val/")):
                    values[name] = float(value)
    if epoch is not None:
        values["epoch"] = epoch
    return values


def summary_rows(
    run_dirs: list[Path], columns: list[str], epoch: int | None = None
) -> list[list[str]]:
    rows = []
    for run in run_dirs:
        metrics_csv = run / "metrics.csv"
        if not metrics_csv.is_file():
            raise SystemExit(f"{metrics_csv} not found: is {run} a litlab run folder?")
        values = last_values(metrics_csv, epoch)
        cells = [f"{values[c]:.2f}" if c in values else "–" for c in columns]
        rows.append([str(run), *cells])
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument(
        "--columns",
        nargs="+",
        default=[
            "epoch",
            "train/loss",
            "val/loss",
            "test/loss",
            "test/nll_is",
            "test/nll_naive",
            "time/fit_s",
        ],  # fmt: skip
    )
    parser.add_argument("--epoch", type=int, help="train/val values of this 0-based epoch")
    args = parser.parse_args(argv)
    header = ["run", *args.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(row) + " |" for row in summary_rows(args.runs, args.columns, args.epoch)
    ]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
