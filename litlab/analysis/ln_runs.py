"""Compare named LN-placement runs: training loss, final validation loss and gradient attenuation.

    python -m litlab.analysis.ln_runs OUT.png NAME=<run dir> [NAME=<run dir> ...]

Each run folder is a job of ``experiment=ln_placement`` (or a variant of it): ``metrics.csv``
(the training loss per logged step, the validation loss) and the gradient probe's
``grad_norms.csv``. The *attenuation* of a probe step is ||dL/dW_2^(1)|| / ||dL/dW_2^(L)||, the
gradient norm of the lowest layer's second feed-forward weight over the top layer's: about 1 when
every layer gets a gradient of the same size, 10^-k when the gradient shrinks k decades on its way
down. Writes ``OUT.png`` (training loss, running mean of 20 logged steps; attenuation, log scale,
against the step), ``OUT.csv`` (one row per run) and prints the table as Markdown.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from litlab.analysis.ln_sweep import Job, load_job, read_rows, run_report, running_mean
from litlab.files import write_csv
from litlab.plotting import save_figure

HEADER = ["run", "placement", "layers", "lr", "val loss (last)", "train loss (last 50 steps)",
          "attenuation at init", "attenuation (last probe)"]  # fmt: skip


def attenuation(folder: Path, num_layers: int) -> dict[tuple[str, int], float]:
    """``{(phase, step): ||grad W_2 layer 1|| / ||grad W_2 layer L||}`` from ``grad_norms.csv``."""
    norms: dict[tuple[str, int], dict[int, float]] = {}
    for row in read_rows(folder / "grad_norms.csv"):
        if row["name"] == "ffn_out":
            norms.setdefault((row["phase"], int(row["step"])), {})[int(row["layer"])] = float(
                row["norm"]
            )
    top = num_layers - 1
    return {key: layers[0] / layers[top] for key, layers in norms.items()
            if 0 in layers and top in layers and layers[top] > 0}  # fmt: skip


def load(spec: str) -> tuple[str, Job, dict[tuple[str, int], float]]:
    """``NAME=RUN_DIR`` -> the name, the loaded job and its attenuation by probe step."""
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise SystemExit(f"{spec!r}: expected NAME=RUN_DIR")
    job = load_job(Path(folder))
    if job is None:
        raise SystemExit(f"{folder}: not a finished LN-placement run (no grad_norms.csv)")
    return name, job, attenuation(Path(folder), job.num_layers)


def table(runs: Sequence[tuple[str, Job, dict]]) -> list[list]:
    """One :data:`HEADER` row per run."""
    rows = []
    for name, job, att in runs:
        train = [loss for _, loss in job.loss_steps][-50:]
        trained = sorted(step for phase, step in att if phase == "train")
        rows.append([
            name, job.norm, job.num_layers, job.lr, job.val_loss,
            statistics.fmean(train) if train else None,
            att.get(("init", 0)), att[("train", trained[-1])] if trained else None,
        ])  # fmt: skip
    return rows


def plot(runs: Sequence[tuple[str, Job, dict]]):
    """Left: training loss (running mean of 20) per step; right: attenuation per step (log)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, job, att in runs:
        steps = [step for step, _ in job.loss_steps]
        left.plot(steps, running_mean([loss for _, loss in job.loss_steps], 20), label=name)
        trained = sorted(step for phase, step in att if phase == "train")
        right.plot(trained, [att[("train", step)] for step in trained], label=name)
    left.set(xlabel="step", ylabel="training loss (nats, running mean of 20)")
    right.set(xlabel="step", ylabel="attenuation ||g(W2, layer 1)|| / ||g(W2, layer L)||",
              yscale="log")  # fmt: skip
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def markdown(rows: Sequence[Sequence]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 0.01 or abs(value) >= 1000 else f"{value:.3f}"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def compare(out: Path, specs: Sequence[str]) -> None:
    """Load every ``NAME=RUN_DIR``, write ``out`` (PNG) and ``out.csv``, print the table."""
    runs = [load(spec) for spec in specs]
    rows = table(runs)
    write_csv(out.with_suffix(".csv"), HEADER, rows)
    save_figure(plot(runs), out)
    print(markdown(rows))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output PNG (its CSV beside it)")
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    args = parser.parse_args(argv)
    run_report(compare, args.out, args.runs)


if __name__ == "__main__":
    main()
