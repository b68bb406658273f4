"""Compare named LN-placement runs: training loss, final validation loss and gradient attenuation.

    python -m litlab.analysis.ln_runs OUT.png NAME=<run dir> [NAME=<run dir> ...]

Each run folder is a job of ``experiment=ln_placement`` (or a variant of it): ``metrics.csv``
(the training loss per logged step, the validation loss) and the gradient probe's
``grad_norms.csv``. The *attenuation* of a probe step is ||dL/dW_2^(1)|| / ||dL/dW_2^(L)||, the
gradient norm of the lowest layer's second feed-forward weight over the top layer's: about 1 when
every layer gets a gradient of the same size, 10^-k when the gradient shrinks k decades on its way
down. When the run has the probe's ``signal.csv`` (``litlab.callbacks.grad_probe``), the table adds
the top layer's ``token_cos`` (mean cosine between the vectors of two positions: 1 = every position
the same, the prediction independent of the input) and the mean ``carry`` over layers (cosine of a
token's vector before and after a layer), at init and at the last probe. Writes ``OUT.png``
(training loss, running mean of 20 logged steps; attenuation, log scale; top-layer token cosine;
each against the step), ``OUT.csv`` (one row per run) and prints the table as Markdown.
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
          "attenuation at init", "attenuation (last probe)", "top token cos at init",
          "top token cos (last probe)", "mean carry at init", "mean carry (last probe)"]  # fmt: skip
Signal = dict[tuple[str, int], dict[tuple[str, int], float]]  # (phase, step) -> (name, layer)


def attenuation(job: Job) -> dict[tuple[str, int], float]:
    """``{(phase, step): ||grad W_2 layer 1|| / ||grad W_2 layer L||}`` of every probe step."""
    top = ("ffn_out", job.num_layers - 1)
    return {key: norms[("ffn_out", 0)] / norms[top] for key, norms in job.probes.items()
            if ("ffn_out", 0) in norms and norms.get(top, 0) > 0}  # fmt: skip


def signal(folder: Path) -> Signal:
    """``{(phase, step): {(name, layer): value}}`` from ``signal.csv``; empty without one."""
    path, values = folder / "signal.csv", {}
    if path.is_file():
        for row in read_rows(path):
            key = (row["phase"], int(row["step"]))
            values.setdefault(key, {})[(row["name"], int(row["layer"]))] = float(row["value"])
    return values


def signal_summary(values: Signal, num_layers: int, key: tuple[str, int] | None) -> list:
    """[top-layer token_cos, mean carry over layers] at one probe step (None when not measured)."""
    if key is None or key not in values:
        return [None, None]
    probe = values[key]
    carry = [probe[("carry", i)] for i in range(num_layers) if ("carry", i) in probe]
    return [probe.get(("token_cos", num_layers - 1)), statistics.fmean(carry) if carry else None]


def load(spec: str) -> tuple[str, Job, dict[tuple[str, int], float], Signal]:
    """``NAME=RUN_DIR`` -> the name, the loaded job, its attenuation by probe step, its signal."""
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise SystemExit(f"{spec!r}: expected NAME=RUN_DIR")
    job = load_job(Path(folder))
    if job is None:
        raise SystemExit(f"{folder}: not a finished LN-placement run (no grad_norms.csv)")
    return name, job, attenuation(job), signal(Path(folder))


def table(runs: Sequence[tuple[str, Job, dict, Signal]]) -> list[list]:
    """One :data:`HEADER` row per run."""
    rows = []
    for name, job, att, values in runs:
        train = [loss for _, loss in job.loss_steps][-50:]
        trained = sorted(step for phase, step in att if phase == "train")
        last_signal = max((key for key in values if key[0] == "train"), default=None)
        init_signal = signal_summary(values, job.num_layers, ("init", 0))
        end_signal = signal_summary(values, job.num_layers, last_signal)
        rows.append([
            name, job.norm, job.num_layers, job.lr, job.val_loss,
            statistics.fmean(train) if train else None,
            att.get(("init", 0)), att[("train", trained[-1])] if trained else None,
            init_signal[0], end_signal[0], init_signal[1], end_signal[1],
        ])  # fmt: skip
    return rows


def plot(runs: Sequence[tuple[str, Job, dict, Signal]]):
    """Training loss (running mean of 20), attenuation (log) and top-layer token cosine, per step."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    for i, (name, job, att, values) in enumerate(runs):
        style = {"label": name, "color": colors[i % len(colors)]}
        steps = [step for step, _ in job.loss_steps]
        left.plot(steps, running_mean([loss for _, loss in job.loss_steps], 20), **style)
        trained = sorted(step for phase, step in att if phase == "train")
        middle.plot(trained, [att[("train", step)] for step in trained], **style)
        top = ("token_cos", job.num_layers - 1)
        probed = sorted(step for phase, step in values if phase == "train")
        right.plot(probed, [values[("train", step)].get(top) for step in probed], **style)
    left.set(xlabel="step", ylabel="training loss (nats, running mean of 20)")
    middle.set(xlabel="step", ylabel="attenuation ||g(W2, layer 1)|| / ||g(W2, layer L)||",
               yscale="log")  # fmt: skip
    right.set(xlabel="step", ylabel="top layer: mean cosine between positions", ylim=(-0.05, 1.05))
    for ax in (left, middle, right):
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
