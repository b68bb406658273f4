"""Turn LayerNorm-placement sweep folders into the study's figures and tables (report Q17).

    python -m litlab.analysis.ln_sweep <sweep dir> [<sweep dir> ...] [--out DIR]

Reads every job folder of the sweep(s) (``config.yaml`` + ``grad_norms.csv`` written by
:class:`callbacks.grad_probe.GradProbe`, ``metrics.csv`` by the CSV logger) and writes to ``--out``
(default ``<first sweep dir>/ln_report``):

* ``jobs.csv``: one row per job (placement, depth, seed, warm-up, init embedding-gradient norm,
  last training loss, validation loss);
* ``embedding_grad_vs_depth.{png,csv}``: ||dL/dE||_F at initialisation vs number of layers, log y,
  one curve per placement, mean and spread (min-max, dots per seed) over seeds;
* ``pre_post_ratio.csv``: that norm per placement at each depth, and the pre-LN / post-LN and
  Peri-LN / post-LN ratios;
* ``layer_grad_norms.{png,csv}``: per-layer gradient norms at init (attention output W^O, FFN W_1,
  W_2) vs layer index for the deepest model (Xiong et al. 2020, Figure 3);
* ``loss_curves.{png,csv}``: training loss vs step for the deepest model, per placement, with and
  without warm-up when the sweeps hold both (mean over seeds of the same placement, warm-up and
  learning rate; jobs at several learning rates give several curves); the figure marks the validation
  losses too, and ``val_curves.csv`` lists them (several per job with
  ``trainer.val_check_interval`` < 1, else one at the end).

Placements: post-LN, pre-LN, Peri-LN (``model.norm``; folders of sweeps made before Peri-LN store
only ``model.norm_first``, read as post/pre). At-init figures count each (placement, depth, seed)
once, preferring a job without warm-up (initialisation does not depend on it), so several sweeps
can be passed together.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from litlab.files import write_csv
from litlab.plotting import save_figure  # also selects the Agg backend

PLACEMENTS = {"post": "post-LN", "pre": "pre-LN", "peri": "Peri-LN"}  # model.norm -> label
COLORS = {"post": "tab:red", "pre": "tab:blue", "peri": "tab:green"}
LAYER_KINDS = ("attn_out", "ffn_in", "ffn_out")
JobT = TypeVar("JobT")


@dataclass
class Job:
    """One finished job of a sweep: its setting and what it measured."""

    folder: Path
    norm: str  # post | pre | peri
    num_layers: int
    seed: int | None
    warmup_steps: int
    lr: float | None = None  # the optimiser's (peak) learning rate
    # every probe step's norms: (phase, step) -> (name, layer) -> norm
    probes: dict[tuple[str, int], dict[tuple[str, int | None], float]] = field(default_factory=dict)
    loss_steps: list[tuple[int, float]] = field(default_factory=list)
    val_steps: list[tuple[int, float]] = field(default_factory=list)

    @property
    def init(self) -> dict[tuple[str, int | None], float]:
        """The norms measured at initialisation: (name, layer) -> norm."""
        return {key: norm for (phase, _), norms in self.probes.items() if phase == "init"
                for key, norm in norms.items()}  # fmt: skip

    @property
    def embedding(self) -> float:
        return self.init[("embedding", None)]

    @property
    def val_loss(self) -> float | None:
        """The last validation loss, None when the job never validated."""
        return self.val_steps[-1][1] if self.val_steps else None


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def placement_of(model: dict) -> str:
    """A job's ``model.norm``; from ``model.norm_first`` (false: post, true: pre) when the job's
    config predates Peri-LN or leaves ``norm`` unset."""
    norm = model.get("norm")
    if norm in PLACEMENTS:
        return norm
    return "pre" if model.get("norm_first") else "post"


def order(norm: str) -> int:
    """Sort key of a placement: post, pre, peri (the order of :data:`PLACEMENTS`)."""
    return list(PLACEMENTS).index(norm)


def warmup_of(scheduler: dict | None) -> int:
    """Warm-up steps of a job's scheduler config (0 when it has none)."""
    return int((scheduler or {}).get("warmup_steps") or 0)


def load_job(folder: Path) -> Job | None:
    """A job folder -> :class:`Job`, or None (with a message) when it has no probe output."""
    probe = folder / "grad_norms.csv"
    if not probe.is_file():
        print(
            f"skipping {folder}: no grad_norms.csv (job failed or still running?)", file=sys.stderr
        )
        return None
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    model = cfg["model"]
    job = Job(
        folder=folder,
        norm=placement_of(model),
        num_layers=int(model["num_layers"]),
        seed=cfg.get("seed"),
        warmup_steps=warmup_of(model.get("scheduler")),
        lr=(model.get("optimizer") or {}).get("lr"),
    )
    for row in read_rows(probe):
        layer = int(row["layer"]) if row["layer"] != "" else None
        step = job.probes.setdefault((row["phase"], int(row["step"])), {})
        step[(row["name"], layer)] = float(row["norm"])
    if ("embedding", None) not in job.init:
        print(f"skipping {folder}: no gradient norms at init in grad_norms.csv", file=sys.stderr)
        return None
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        for row in read_rows(metrics):
            if row.get("train/loss_step"):
                job.loss_steps.append((int(row["step"]), float(row["train/loss_step"])))
            if row.get("val/loss"):
                job.val_steps.append((int(row["step"]), float(row["val/loss"])))
    return job


def load_jobs(
    sweep_dirs: Sequence[Path], load: Callable[[Path], JobT | None], none_found: str
) -> list[JobT]:
    """``load`` of every job folder (one holding ``config.yaml``) under the sweep folders, in
    order, leaving out the folders it returns None for (it says why).

    Raises:
        FileNotFoundError: a sweep folder does not exist, or no job loaded (``none_found``
            says what was looked for).
    """
    jobs = []
    for sweep in sweep_dirs:
        if not sweep.is_dir():
            raise FileNotFoundError(f"sweep folder {sweep} does not exist")
        for config in sorted(sweep.rglob("config.yaml")):
            if config.parent.name == ".hydra":
                continue
            job = load(config.parent)
            if job is not None:
                jobs.append(job)
    if not jobs:
        raise FileNotFoundError(f"{none_found} under {', '.join(map(str, sweep_dirs))}")
    return jobs


def find_jobs(sweep_dirs: Sequence[Path]) -> list[Job]:
    """Every job folder (one holding ``config.yaml``) under the sweep folders, sorted."""
    jobs = load_jobs(
        sweep_dirs, load_job, "no finished LN-placement jobs (config.yaml + grad_norms.csv)"
    )
    return sorted(jobs, key=lambda j: (j.warmup_steps, order(j.norm), j.num_layers, j.seed or 0))


def at_init(jobs: Sequence[Job]) -> list[Job]:
    """Jobs for the at-init figures: one per (placement, depth, seed), without warm-up if possible.

    A warm-up cannot change the initialisation, so a warm-up job only counts when its setting
    never ran without one; a setting repeated in several sweeps counts once per seed.
    """
    settings_without = {(j.norm, j.num_layers) for j in jobs if j.warmup_steps == 0}
    kept: dict[tuple, Job] = {}
    for j in sorted(jobs, key=lambda j: j.warmup_steps):
        if j.warmup_steps == 0 or (j.norm, j.num_layers) not in settings_without:
            kept.setdefault((j.norm, j.num_layers, j.seed), j)
    return list(kept.values())


def spread(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, standard deviation (0 for one value), min and max."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, min(values), max(values)


Table = dict[str, dict[int, list[float]]]  # placement -> depth -> one value per seed


def embedding_by_depth(jobs: Sequence[Job]) -> Table:
    """placement -> depth -> embedding-gradient norms at init (one per seed)."""
    table: Table = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        table[job.norm][job.num_layers].append(job.embedding)
    return table


def depth_rows(table: Table) -> list[tuple]:
    rows = []
    for norm in sorted(table, key=order):
        for depth in sorted(table[norm]):
            values = table[norm][depth]
            rows.append((PLACEMENTS[norm], depth, len(values), *spread(values)))
    return rows


def ratio_rows(table: Table) -> list[tuple]:
    """(depth, post-LN, pre-LN, Peri-LN means, pre/post, peri/post) for the depths measured with
    post-LN and another placement; a placement not measured at a depth is ``""``."""
    rows = []
    post = table.get("post", {})
    for depth in sorted(post):
        means = {
            n: statistics.fmean(table[n][depth])
            for n in ("pre", "peri")
            if depth in table.get(n, {})
        }
        if not means:
            continue
        base = statistics.fmean(post[depth])
        rows.append((depth, base, means.get("pre", ""), means.get("peri", ""),
                     *(means[n] / base if n in means else "" for n in ("pre", "peri"))))  # fmt: skip
    return rows


def plot_embedding_by_depth(table: Table):
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in sorted(table, key=order):
        depths = sorted(table[norm])
        stats = [spread(table[norm][d]) for d in depths]
        means = [s[0] for s in stats]
        color = COLORS[norm]
        ax.fill_between(
            depths, [s[2] for s in stats], [s[3] for s in stats], color=color, alpha=0.2
        )
        ax.plot(depths, means, marker="o", color=color, label=f"{PLACEMENTS[norm]} (mean)")
        for d in depths:
            values = table[norm][d]
            ax.scatter([d] * len(values), values, s=8, color=color, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of layers")
    ax.set_ylabel(r"$\|\partial L / \partial E\|_F$ at init")
    ax.set_title("embedding gradient at init (band: min-max over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def layer_rows(jobs: Sequence[Job], depth: int) -> list[tuple]:
    """(placement, depth, kind, layer, n, mean, std) of per-layer init norms for one depth."""
    values: dict[tuple[int, str, int], list[float]] = defaultdict(list)
    for job in jobs:
        if job.num_layers != depth:
            continue
        for (name, layer), value in job.init.items():
            if layer is not None:
                values[(order(job.norm), name, layer)].append(value)
    rows = []
    for (index, kind, layer), vals in sorted(values.items()):
        mean, std, _, _ = spread(vals)
        rows.append((list(PLACEMENTS.values())[index], depth, kind, layer, len(vals), mean, std))
    return rows


def plot_layers(rows: Sequence[tuple], depth: int):
    kinds = [k for k in LAYER_KINDS if any(r[2] == k for r in rows)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for norm, placement in PLACEMENTS.items():
            sel = [r for r in rows if r[2] == kind and r[0] == placement]
            if not sel:
                continue
            layers = [r[3] + 1 for r in sel]
            means = [r[5] for r in sel]
            stds = [r[6] for r in sel]
            ax.errorbar(layers, means, yerr=stds, marker="o", markersize=3, capsize=2,
                        color=COLORS[norm], label=placement)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("layer (1 = next to the embedding)")
        ax.set_title(f"{kind} weight gradient, {depth} layers")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(r"$\|\partial L / \partial W\|_F$ at init")
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def setting(key: tuple) -> tuple:
    """Sort key of a (placement, warm-up, lr) curve; a job without an lr in its config sorts first."""
    placement, warmup, lr = key
    rank = list(PLACEMENTS.values()).index(placement) if placement in PLACEMENTS.values() else -1
    return (rank, warmup, lr if lr is not None else -1.0)


def loss_rows(jobs: Sequence[Job], depth: int, curve: str = "loss_steps") -> list[tuple]:
    """(placement, warm-up steps, peak lr, depth, step, n seeds, mean loss) for one depth;
    ``curve``: ``loss_steps`` (training loss) or ``val_steps`` (validation loss). Jobs are averaged
    only with jobs of the same placement, warm-up and learning rate (their other seeds)."""
    curves: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        if job.num_layers == depth:
            for step, loss in getattr(job, curve):
                curves[(PLACEMENTS[job.norm], job.warmup_steps, job.lr)][step].append(loss)
    rows = []
    for (placement, warmup, lr), by_step in sorted(curves.items(), key=lambda kv: setting(kv[0])):
        for step in sorted(by_step):
            vals = by_step[step]
            rows.append((placement, warmup, lr, depth, step, len(vals), statistics.fmean(vals)))
    return rows


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    return [statistics.fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


LINESTYLES = ("-", "--", ":", "-.")


def plot_losses(rows: Sequence[tuple], depth: int, val_rows: Sequence[tuple] = (), window: int = 5):
    """Loss vs step per (placement, warm-up, lr): raw means faint, running mean of ``window`` bold,
    validation losses (``val_rows``, same layout) as markers; colour = placement, line style =
    (warm-up, lr)."""
    fig, ax = plt.subplots(figsize=(9, 4))
    settings = sorted({r[:3] for r in rows}, key=setting)
    schedules = sorted({r[1:3] for r in rows}, key=lambda s: setting(("", *s)))
    one_lr = len({r[2] for r in rows}) == 1
    for placement, warmup, lr in settings:
        sel = [r for r in rows if r[:3] == (placement, warmup, lr)]
        norm = next(n for n, label in PLACEMENTS.items() if label == placement)
        label = f"{placement}, " + (f"warm-up {warmup} steps" if warmup else "no warm-up")
        if not one_lr:
            label += f", lr {lr:g}" if lr is not None else ", lr not in config"
        steps, losses = [r[4] for r in sel], [r[6] for r in sel]
        linestyle = LINESTYLES[schedules.index((warmup, lr)) % len(LINESTYLES)]
        style = dict(color=COLORS[norm], linestyle=linestyle)
        ax.plot(steps, losses, alpha=0.25, linewidth=0.8, **style)
        ax.plot(steps, running_mean(losses, window), label=label, **style)
        val = [r for r in val_rows if r[:3] == (placement, warmup, lr)]
        if val:
            ax.plot([r[4] for r in val], [r[6] for r in val], marker="o", markersize=5, **style)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"training loss (running mean of {window} logged steps)")
    same = f"peak lr {rows[0][2]:g}" if one_lr and rows and rows[0][2] else "peak lr per setting"
    ax.set_title(f"{depth} layers, {same}; dots: validation loss", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def markdown_ratio_table(rows: Sequence[tuple]) -> str:
    """The rows of :func:`ratio_rows` as a Markdown table (``-`` where a placement is missing)."""
    lines = [
        "| layers | post-LN ‖∂L/∂E‖ | pre-LN ‖∂L/∂E‖ | Peri-LN ‖∂L/∂E‖ | pre / post | peri / post |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for depth, *values in rows:
        lines.append(
            f"| {depth} | " + " | ".join("-" if v == "" else f"{v:.3g}" for v in values) + " |"
        )
    return "\n".join(lines)


def report(
    sweep_dirs: Sequence[Path], out: Path | None = None, loss_depth: int | None = None
) -> dict[str, Path]:
    """Write every figure and table; return their paths by name."""
    jobs = find_jobs(sweep_dirs)
    out = out or sweep_dirs[0] / "ln_report"
    paths: dict[str, Path] = {}
    paths["jobs"] = write_csv(
        out / "jobs.csv",
        ["folder", "placement", "num_layers", "seed", "warmup_steps", "lr", "embedding_grad_init",
         "last_train_loss", "val_loss"],
        [(j.folder.name, PLACEMENTS[j.norm], j.num_layers, j.seed, j.warmup_steps, j.lr,
          j.embedding, j.loss_steps[-1][1] if j.loss_steps else "",
          "" if j.val_loss is None else j.val_loss) for j in jobs],
    )  # fmt: skip
    init_jobs = at_init(jobs)
    table = embedding_by_depth(init_jobs)
    paths["embedding_csv"] = write_csv(
        out / "embedding_grad_vs_depth.csv",
        ["placement", "num_layers", "n_seeds", "mean", "std", "min", "max"],
        depth_rows(table),
    )
    paths["embedding_png"] = save_figure(
        plot_embedding_by_depth(table), out / "embedding_grad_vs_depth.png"
    )
    ratios = ratio_rows(table)
    paths["ratio_csv"] = write_csv(
        out / "pre_post_ratio.csv",
        ["num_layers", "post_ln", "pre_ln", "peri_ln", "pre_over_post", "peri_over_post"],
        ratios,
    )
    deepest = max(j.num_layers for j in init_jobs)
    rows = layer_rows(init_jobs, deepest)
    paths["layers_csv"] = write_csv(
        out / "layer_grad_norms.csv",
        ["placement", "num_layers", "weight", "layer", "n_seeds", "mean", "std"],
        rows,
    )
    paths["layers_png"] = save_figure(plot_layers(rows, deepest), out / "layer_grad_norms.png")
    if loss_depth is None:  # the deepest model that ran with a warm-up, else the deepest
        warm = [j.num_layers for j in jobs if j.loss_steps and j.warmup_steps]
        loss_depth = max(warm or [j.num_layers for j in jobs if j.loss_steps], default=None)
    if loss_depth is not None:
        rows = loss_rows(jobs, loss_depth)
        paths["loss_csv"] = write_csv(
            out / "loss_curves.csv",
            ["placement", "warmup_steps", "lr", "num_layers", "step", "n_seeds", "mean_loss"],
            rows,
        )
        val_rows = loss_rows(jobs, loss_depth, "val_steps")
        paths["val_csv"] = write_csv(
            out / "val_curves.csv",
            ["placement", "warmup_steps", "lr", "num_layers", "step", "n_seeds", "mean_val_loss"],
            val_rows,
        )
        paths["loss_png"] = save_figure(
            plot_losses(rows, loss_depth, val_rows), out / "loss_curves.png"
        )
    print(f"{len(jobs)} jobs -> {out}")
    print(markdown_ratio_table(ratios))
    return paths


def sweep_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a sweep report: its sweep folders and ``--out``; described by the
    first line of ``doc`` (the report module's docstring)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="multirun sweep folder(s)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    return parser


def run_report(report: Callable[..., object], *args: Any) -> None:
    """``report(*args)``; a missing sweep folder or no job in it ends the command with one
    ``error:`` line (exit status 1) instead of a traceback."""
    try:
        report(*args)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = sweep_parser(__doc__)
    parser.add_argument("--loss-depth", type=int, default=None,
                        help="depth of the loss-curve figure (default: deepest with a warm-up run)")  # fmt: skip
    args = parser.parse_args(argv)
    run_report(report, args.sweeps, args.out, args.loss_depth)


if __name__ == "__main__":
    main()
