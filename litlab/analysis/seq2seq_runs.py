"""Compare several Seq2Seq runs in one figure, from the CSVs their figure callback wrote.

    python -m litlab.analysis.seq2seq_runs length OUT.png bahdanau=<run dir> none=<run dir>
    python -m litlab.analysis.seq2seq_runs curves OUT.png tf0=<run dir> tf1=<run dir>

``length``: each run's ``figures/bleu_by_length.csv`` (test BLEU-4 against source length, the
attention study); ``curves``: each run's validation BLEU per epoch (the teacher-forcing study).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from pathlib import Path

from litlab.callbacks.seq2seq_figures import plot_bleu_by_length
from litlab.plotting import plot_curves, save_figure


def read_bleu_csv(path: str | os.PathLike) -> tuple[list[float], list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["src_len"]) for r in rows], [float(r["bleu"]) for r in rows]


def read_curve_csv(path: str | os.PathLike, metric: str) -> tuple[list[float], list[float]]:
    """One metric's ``(epochs, values)`` from a :class:`MetricCurves` CSV (metric, epoch, value)."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] == metric]
    return [float(r["epoch"]) for r in rows], [float(r["value"]) for r in rows]


def main(argv: Sequence[str] | None = None) -> None:
    """``length OUT NAME=RUN ...``: BLEU vs source length; ``curves OUT NAME=RUN ...``: val BLEU
    per epoch. ``RUN`` is a run folder holding ``figures/``."""
    parser = argparse.ArgumentParser(description="compare several Seq2Seq runs in one figure")
    parser.add_argument("kind", choices=["length", "curves"])
    parser.add_argument("out", type=Path, help="output PNG")
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR (a run folder with figures/)")
    args = parser.parse_args(argv)
    series = {}
    for item in args.runs:
        name, _, run = item.partition("=")
        figures = Path(run) / "figures"
        if args.kind == "length":
            series[name] = read_bleu_csv(figures / "bleu_by_length.csv")
        else:
            series[name] = read_curve_csv(figures / "bleu_curves.csv", "val/bleu")
    if args.kind == "length":
        fig = plot_bleu_by_length(series)
    else:
        fig = plot_curves(series, "epoch", "val BLEU-4", title="validation BLEU per epoch")
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
