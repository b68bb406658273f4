"""Compare Seq2Seq runs, from the CSVs their callbacks and loggers wrote.

    python -m litlab.analysis.seq2seq_runs length OUT.png bahdanau=<run dir> none=<run dir>
    python -m litlab.analysis.seq2seq_runs curves OUT.png tf0=<run>[,<run>...] tf1=<run>[,...]
    python -m litlab.analysis.seq2seq_runs seeds OUT.png default=<run>,<run>,<run> no_eos=<runs>

``length``: each run's ``figures/bleu_by_length.csv`` (test BLEU-4 against source length, the
attention study); ``curves``: validation BLEU per epoch (the teacher-forcing study); both average
the runs of a name. ``seeds``: one configuration per name, repeated over seeds: mean ± std of the
test metrics (:mod:`litlab.analysis.stats`), Welch's p-value against the first name, printed as a
Markdown table and written as ``OUT.csv`` beside a bar chart ``OUT.png`` of test BLEU-4.
Every kind writes its figure's numbers to ``OUT.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from litlab.analysis.run_summary import last_values
from litlab.analysis.stats import mean_std, welch_t_test
from litlab.callbacks.seq2seq_figures import plot_bleu_by_length
from litlab.files import write_csv
from litlab.plotting import plot_curves, save_figure, series_to_rows

SEED_METRICS = {  # metrics.csv column -> (table header, scale)
    "test/bleu": ("test BLEU-4", 100.0),
    "test/out_len": ("output length (words)", 1.0),
    "test/at_max_len": ("at max length (%)", 100.0),
    "val/bleu": ("val BLEU-4, last epoch", 100.0),
    "time/fit_s": ("fit (s)", 1.0),
}


def read_bleu_csv(path: str | os.PathLike) -> tuple[list[float], list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["src_len"]) for r in rows], [float(r["bleu"]) for r in rows]


def read_curve_csv(path: str | os.PathLike, metric: str) -> tuple[list[float], list[float]]:
    """One metric's ``(epochs, values)`` from a :class:`MetricCurves` CSV (metric, epoch, value)."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] == metric]
    return [float(r["epoch"]) for r in rows], [float(r["value"]) for r in rows]


def mean_curve(
    curves: Sequence[tuple[list[float], list[float]]],
) -> tuple[list[float], list[float]]:
    """Pointwise mean of curves ``(xs, ys)`` over the points all of them have (same xs)."""
    length = min(len(xs) for xs, _ in curves)
    return curves[0][0][:length], [sum(ys[i] for _, ys in curves) / len(curves)
                                   for i in range(length)]  # fmt: skip


def test_values(run: Path) -> dict[str, float]:
    """The last logged values of a finished run; every :data:`SEED_METRICS` column must be there."""
    values = last_values(run / "metrics.csv")
    missing = [column for column in SEED_METRICS if column not in values]
    if missing:
        raise SystemExit(f"{run}: no {', '.join(missing)} in metrics.csv (did it finish its test?)")
    return values


def seed_table(groups: dict[str, list[Path]]) -> tuple[list[str], list[list]]:
    """One row per configuration: n, then mean and std of each :data:`SEED_METRICS` column, and
    Welch's two-sided p-value of test BLEU against the first configuration."""
    header = ["config", "n"]
    for label, _ in SEED_METRICS.values():
        header += [f"{label} mean", f"{label} std"]
    header.append("p (test BLEU vs first)")
    values = {name: [test_values(run) for run in runs] for name, runs in groups.items()}
    reference = [v["test/bleu"] * 100 for v in next(iter(values.values()))]
    rows = []
    for i, (name, runs) in enumerate(values.items()):
        row: list = [name, len(runs)]
        for column, (_, scale) in SEED_METRICS.items():
            row += list(mean_std([v[column] * scale for v in runs]))
        bleu = [v["test/bleu"] * 100 for v in runs]
        testable = i > 0 and min(len(bleu), len(reference)) > 1
        row.append(welch_t_test(bleu, reference)[2] if testable else float("nan"))
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list]) -> str:
    """Table with ``mean ± std`` cells (the CSV keeps them apart)."""
    labels = [label for label, _ in SEED_METRICS.values()]
    lines = ["| config | n | " + " | ".join(labels) + " | p (test BLEU vs first) |",
             "|" + "---|" * (len(labels) + 3)]  # fmt: skip
    for row in rows:
        cells = [f"{row[i]:.2f} ± {row[i + 1]:.2f}" for i in range(2, len(row) - 1, 2)]
        p = "–" if row[-1] != row[-1] else ("< 0.001" if row[-1] < 1e-3 else f"{row[-1]:.3f}")
        lines.append(f"| {row[0]} | {row[1]} | " + " | ".join(cells) + f" | {p} |")
    return "\n".join(lines)


def plot_seeds(rows: list[list]):
    """Bar chart of test BLEU-4, mean ± std over seeds, one bar per configuration."""
    fig, ax = plt.subplots(figsize=(6, 4))
    names = [row[0] for row in rows]
    ax.bar(names, [row[2] for row in rows], yerr=[row[3] for row in rows], capsize=4)
    ax.set_ylabel("test BLEU-4 (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.autofmt_xdate(rotation=20)
    return fig


def parse_groups(items: Sequence[str]) -> dict[str, list[Path]]:
    """``NAME=RUN[,RUN...]`` arguments -> ``{NAME: [run folders]}``."""
    groups = {}
    for item in items:
        name, _, runs = item.partition("=")
        groups[name] = [Path(run) for run in runs.split(",") if run]
    return groups


def main(argv: Sequence[str] | None = None) -> None:
    """``length|curves|seeds OUT NAME=RUN[,RUN...] ...`` (module docstring). ``RUN`` is a run
    folder holding ``figures/`` and ``metrics.csv``."""
    parser = argparse.ArgumentParser(description="compare Seq2Seq runs")
    parser.add_argument("kind", choices=["length", "curves", "seeds"])
    parser.add_argument("out", type=Path, help="output PNG")
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR[,RUN_DIR...] (run folders)")
    args = parser.parse_args(argv)
    groups = parse_groups(args.runs)
    if args.kind == "length":
        series = {name: mean_curve([read_bleu_csv(run / "figures" / "bleu_by_length.csv")
                                    for run in runs]) for name, runs in groups.items()}  # fmt: skip
        fig = plot_bleu_by_length(series)
        write_csv(args.out.with_suffix(".csv"), ["run", "src_len", "bleu"], series_to_rows(series))
    elif args.kind == "curves":
        series = {name: mean_curve([read_curve_csv(run / "figures" / "bleu_curves.csv", "val/bleu")
                                    for run in runs]) for name, runs in groups.items()}  # fmt: skip
        fig = plot_curves(series, "epoch", "val BLEU-4", title="validation BLEU per epoch")
        write_csv(
            args.out.with_suffix(".csv"), ["run", "epoch", "val_bleu"], series_to_rows(series)
        )
    else:
        header, rows = seed_table(groups)
        write_csv(args.out.with_suffix(".csv"), header, rows)
        print(markdown(header, rows))
        fig = plot_seeds(rows)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
