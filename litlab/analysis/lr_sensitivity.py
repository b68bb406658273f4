"""Final loss against peak learning rate, per LayerNorm placement (Wortsman et al. 2023).

    python -m litlab.analysis.lr_sensitivity <sweep dir> [<sweep dir> ...] [--out DIR]

Reads every job folder of the sweep(s) made by ``experiment=ln_lr_sensitivity`` (``config.yaml``,
``metrics.csv`` of the CSV logger, and the sweep's ``summary.csv`` for jobs that failed) and
writes to ``--out`` (default ``<first sweep dir>/lr_report``):

* ``jobs.csv``: one row per job (placement, depth, warm-up, peak lr, seed, final loss, diverged);
* ``lr_sensitivity.{png,csv}``: final loss vs peak learning rate, log x, one line per placement
  (post-LN, pre-LN, Peri-LN), one panel per (depth, warm-up); mean over seeds, min-max band;
* ``lr_sensitivity_summary.csv``: per (placement, depth, warm-up) the best learning rate and its
  loss, and Wortsman et al.'s LR sensitivity, the mean over the swept learning rates of
  ``min(final loss, initial loss) - best final loss`` (0: every lr as good as the best; a diverged
  job counts as the initial loss).

Initial loss: ln(vocabulary size), the loss of a uniform prediction, which the model's loss at
initialisation is close to (vocabulary size from the job's ``hparams.yaml``; without it, the
job's first logged training loss).

Final loss: the job's last validation loss (``val/loss``). A job whose training loss became NaN
or infinite (stopped by :class:`litlab.callbacks.finite_loss.StopOnNonFiniteLoss`, as
``summary.csv`` or ``metrics.csv`` tell) is *diverged*: it has no final loss and is drawn as a
cross at the initial loss (ln 33,278 = 10.41 nats on WikiText-2). A job
that failed otherwise, or has not validated yet, is skipped with a message.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from litlab.analysis.ln_sweep import (
    COLORS,
    PLACEMENTS,
    load_jobs,
    order,
    placement_of,
    read_rows,
    run_report,
    sweep_parser,
    warmup_of,
)
from litlab.files import write_csv
from litlab.plotting import save_figure  # also selects the Agg backend

DIVERGED = ("non-finite", "NonFiniteLossError")  # how a NaN/inf stop reads in summary.csv


@dataclass
class Job:
    """One job of the sweep: its setting and how it ended."""

    folder: Path
    norm: str  # post | pre | peri
    num_layers: int
    warmup_steps: int
    lr: float
    seed: int | None
    final_loss: float | None  # the last validation loss; None when diverged
    init_loss: float | None  # ln(vocabulary size), else the first logged training loss
    diverged: bool = False

    @property
    def setting(self) -> tuple[str, int, int, float]:
        return (self.norm, self.num_layers, self.warmup_steps, self.lr)


def failures(sweep: Path) -> dict[Path, str]:
    """Failed jobs' folders -> error line, from the sweep's ``summary.csv`` (none without it)."""
    summary = sweep / "summary.csv"
    if not summary.is_file():
        return {}
    failed = {}
    for row in read_rows(summary):
        if row.get("status") == "FAILED" and row.get("run_dir"):
            failed[Path(row["run_dir"]).resolve()] = row.get("error", "")
    return failed


def finite(text: str | None) -> float | None:
    """A metrics.csv cell as a float; None when empty."""
    return float(text) if text not in (None, "") else None


def load_job(folder: Path, error: str | None) -> Job | None:
    """A job folder -> :class:`Job`, or None (with a message) when it cannot be used.

    ``error``: the job's line in ``summary.csv`` when it failed, else None.
    """
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    model = cfg.get("model") or {}
    lr = (model.get("optimizer") or {}).get("lr")
    if "num_layers" not in model or lr is None:
        print(
            f"skipping {folder}: not a Transformer LM job (no model.num_layers / lr)",
            file=sys.stderr,
        )
        return None
    train, val = [], []
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        for row in read_rows(metrics):
            if finite(row.get("train/loss_step")) is not None:
                train.append(float(row["train/loss_step"]))
            if finite(row.get("val/loss")) is not None:
                val.append(float(row["val/loss"]))
    hparams = folder / "hparams.yaml"
    vocab = OmegaConf.load(hparams).get("vocab_size") if hparams.is_file() else None
    first = train[0] if train and math.isfinite(train[0]) else None
    init = math.log(vocab) if vocab else first
    diverged = any(not math.isfinite(x) for x in train + val[-1:]) or (
        error is not None and any(word in error for word in DIVERGED)
    )
    if error is not None and not diverged:
        print(f"skipping {folder}: the job failed ({error[:200]})", file=sys.stderr)
        return None
    if not diverged and not val:
        print(f"skipping {folder}: no validation loss (job still running?)", file=sys.stderr)
        return None
    return Job(
        folder=folder,
        norm=placement_of(model),
        num_layers=int(model["num_layers"]),
        warmup_steps=warmup_of(model.get("scheduler")),
        lr=float(lr),
        seed=cfg.get("seed"),
        final_loss=None if diverged else val[-1],
        init_loss=init,
        diverged=diverged,
    )


def find_jobs(sweep_dirs: Sequence[Path]) -> list[Job]:
    """Every usable job folder (one holding ``config.yaml``) under the sweep folders, sorted."""
    failed = {path: error for sweep in sweep_dirs for path, error in failures(sweep).items()}
    jobs = load_jobs(
        sweep_dirs,
        lambda folder: load_job(folder, failed.get(folder.resolve())),
        "no finished learning-rate sensitivity jobs (config.yaml + metrics.csv with a "
        "validation loss)",
    )
    return sorted(
        jobs, key=lambda j: (order(j.norm), j.num_layers, j.warmup_steps, j.lr, j.seed or 0)
    )


def initial_loss(jobs: Sequence[Job]) -> float:
    """The initial loss: mean of the jobs' (all ln(vocabulary size) on one data set)."""
    values = [j.init_loss for j in jobs if j.init_loss is not None]
    return statistics.fmean(values) if values else float("nan")


def setting_rows(jobs: Sequence[Job]) -> list[tuple]:
    """(placement, depth, warm-up, lr, n jobs, n diverged, mean, min, max final loss over the
    jobs that did not diverge; ``""`` when all diverged)."""
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        groups[job.setting].append(job)
    rows = []
    for (norm, depth, warmup, lr), group in sorted(
        groups.items(), key=lambda kv: (order(kv[0][0]), *kv[0][1:])
    ):
        losses = [j.final_loss for j in group if j.final_loss is not None]
        stats = (statistics.fmean(losses), min(losses), max(losses)) if losses else ("", "", "")
        rows.append(
            (PLACEMENTS[norm], depth, warmup, lr, len(group), len(group) - len(losses), *stats)
        )
    return rows


def summary_rows(rows: Sequence[tuple], init: float) -> list[tuple]:
    """Per (placement, depth, warm-up): the best lr, its mean final loss, the LR sensitivity
    mean_lr[min(loss, init) - best] (a diverged or all-diverged lr counts as ``init``), and how
    many of the swept learning rates had a diverged job."""
    curves: dict[tuple, list[tuple]] = defaultdict(list)
    for row in rows:
        curves[row[:3]].append(row)
    out = []
    for (placement, depth, warmup), curve in curves.items():

        def loss(r: tuple) -> float:  # a learning rate with a diverged seed counts as diverged
            return init if r[5] or r[6] == "" else min(r[6], init)

        best = min(curve, key=loss)
        sensitivity = statistics.fmean(loss(r) - loss(best) for r in curve)
        n_diverged = sum(1 for r in curve if r[5])
        out.append(
            (placement, depth, warmup, best[3], loss(best), sensitivity, len(curve), n_diverged)
        )
    return out


def plot(rows: Sequence[tuple], init: float):
    """Final loss vs peak lr: one panel per (depth, warm-up), one line per placement."""
    depths = sorted({r[1] for r in rows})
    warmups = sorted({r[2] for r in rows})
    fig, axes = plt.subplots(
        len(depths), len(warmups), figsize=(4.2 * len(warmups), 3.4 * len(depths)),
        squeeze=False, sharex=True, sharey=True,
    )  # fmt: skip
    finite_losses = [r[7] for r in rows if r[7] != ""]
    top = init if math.isfinite(init) else max(finite_losses or [1.0])
    for i, depth in enumerate(depths):
        for k, warmup in enumerate(warmups):
            ax = axes[i][k]
            for norm, placement in PLACEMENTS.items():
                sel = [r for r in rows if r[:3] == (placement, depth, warmup)]
                if not sel:
                    continue
                lrs = [r[3] for r in sel]
                # a diverged lr is drawn at the initial loss, so that the curve shows the failure
                y = [top if r[5] or r[6] == "" else r[6] for r in sel]
                style = dict(color=COLORS[norm])
                ax.plot(lrs, y, marker="o", markersize=4, label=placement, **style)
                ok = [r for r in sel if r[6] != ""]
                if ok:
                    ax.fill_between([r[3] for r in ok], [r[7] for r in ok], [r[8] for r in ok],
                                    alpha=0.2, **style)  # fmt: skip
                bad = [r[3] for r in sel if r[5]]
                ax.scatter(bad, [top] * len(bad), marker="x", s=60, zorder=3, **style)
            ax.axhline(top, color="grey", linewidth=0.8, linestyle=":")
            ax.set_xscale("log")
            ax.set_title(f"{depth} layers, " + (f"warm-up {warmup} steps" if warmup else "no warm-up"),
                         fontsize="medium")  # fmt: skip
            ax.grid(alpha=0.3, which="both")
            if i == len(depths) - 1:
                ax.set_xlabel("peak learning rate")
            if k == 0:
                ax.set_ylabel("final validation loss (nats)")
    axes[0][0].legend(fontsize="small", title="x: diverged (NaN)", title_fontsize="small")
    fig.suptitle(
        "final loss vs peak learning rate (dotted: initial loss, ln vocabulary size)",
        fontsize="medium",
    )
    fig.tight_layout()
    return fig


def markdown_table(rows: Sequence[tuple]) -> str:
    """Final loss per lr (columns) and (placement, depth, warm-up) (rows); ``NaN`` = diverged."""
    lrs = sorted({r[3] for r in rows})
    cells: dict[tuple, dict[float, str]] = defaultdict(dict)
    for r in rows:
        text = "NaN" if r[6] == "" else f"{r[6]:.3f}" + (f" ({r[5]} NaN)" if r[5] else "")
        cells[r[:3]][r[3]] = text
    lines = ["| placement | layers | warm-up | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
             "|---|---:|---:|" + "---:|" * len(lrs)]  # fmt: skip
    for key in sorted(cells, key=lambda k: (k[1], k[2], list(PLACEMENTS.values()).index(k[0]))):
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | "
                     + " | ".join(cells[key].get(lr, "-") for lr in lrs) + " |")  # fmt: skip
    return "\n".join(lines)


def report(sweep_dirs: Sequence[Path], out: Path | None = None) -> dict[str, Path]:
    """Write the figure and tables; return their paths by name."""
    jobs = find_jobs(sweep_dirs)
    out = out or sweep_dirs[0] / "lr_report"
    paths: dict[str, Path] = {}
    paths["jobs"] = write_csv(
        out / "jobs.csv",
        ["folder", "placement", "num_layers", "warmup_steps", "lr", "seed", "final_val_loss",
         "init_loss", "diverged"],
        [(j.folder.name, PLACEMENTS[j.norm], j.num_layers, j.warmup_steps, j.lr, j.seed,
          "" if j.final_loss is None else j.final_loss, "" if j.init_loss is None else j.init_loss,
          j.diverged) for j in jobs],
    )  # fmt: skip
    rows = setting_rows(jobs)
    init = initial_loss(jobs)
    paths["csv"] = write_csv(
        out / "lr_sensitivity.csv",
        ["placement", "num_layers", "warmup_steps", "lr", "n_jobs", "n_diverged",
         "mean_final_loss", "min_final_loss", "max_final_loss"],
        rows,
    )  # fmt: skip
    paths["summary"] = write_csv(
        out / "lr_sensitivity_summary.csv",
        ["placement", "num_layers", "warmup_steps", "best_lr", "best_final_loss",
         "lr_sensitivity", "n_lrs", "n_lrs_diverged"],
        summary_rows(rows, init),
    )  # fmt: skip
    paths["png"] = save_figure(plot(rows, init), out / "lr_sensitivity.png")
    print(f"{len(jobs)} jobs -> {out} (initial loss {init:.3f} nats)")
    print(markdown_table(rows))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    args = sweep_parser(__doc__).parse_args(argv)
    run_report(report, args.sweeps, args.out)


if __name__ == "__main__":
    main()
