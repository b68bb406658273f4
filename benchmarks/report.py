"""``benchmarks/RESULTS.md`` from one run's measurements (see :mod:`benchmarks.run`)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.workloads import ROOT, WORKLOADS

OVERHEAD_TARGET = {"cpu": 1.05, "cuda": 1.05}  # (a)/(b) time, at most
FAST_PATH_TARGET_S = 0.7  # (g) VAE-MLP seconds per epoch on CUDA, at most (issue 14)
CANONICAL_TARGET = {"cpu": 1.5, "cuda": 10.0}  # (c)/(a) time, at least
STARTUP_TARGET_RATIO = 1.15  # start-up / bare `import torch, lightning`, same run (issue 14)
NOTES = Path(__file__).with_name("notes.md")  # hand-written analysis, appended to the report


def machine() -> list[str]:
    """A few lines describing the machine and the software."""
    import hydra
    import lightning
    import torch
    import torchvision

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kb / 2**20:.1f} GiB RAM"
    except OSError:
        memory = "RAM unknown"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores, {memory}; GPU: {gpu}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, lightning "
        f"{lightning.__version__}, torchvision {torchvision.__version__}, hydra {hydra.__version__}",
        f"- litlab commit {commit or 'unknown'} (the measured code; this file is committed after)",
    ]


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _ratios(results: list[dict], model: str, num: str, den: str, key: str) -> list[float]:
    """Per-repetition ratios ``num/den`` of ``key`` for ``model``."""
    by = {(r["repeat"], r["variant"]): r for r in results if r["model"] == model}
    repeats = sorted({rep for rep, _ in by})
    return [by[rep, num][key] / by[rep, den][key] for rep in repeats if (rep, den) in by]


def _per(result: dict) -> tuple[float, str]:
    """Time of the window as s/epoch (epoch windows) or s/100 steps."""
    if result["window"] == "epoch":
        return result["seconds"], "s/epoch"
    return result["seconds"] * 100 / result["timed_steps"], "s/100 steps"


def overhead_table(results: list[dict], device: str) -> list[str]:
    """(a) litlab vs (b) plain loop: medians and the median of per-repetition ratios."""
    target = OVERHEAD_TARGET["cuda" if device.startswith("cuda") else "cpu"]
    lines = [
        "| study | window | time (a) | time (b) | **time (a)/(b)** | throughput (a) | (b) | "
        "thr. (b)/(a) | peak RSS (a) | (b) | RSS (a)/(b) | target (a)/(b) ≤ "
        f"{target} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, workload in WORKLOADS.items():
        rows = [r for r in results if r["model"] == model]
        if not rows:
            continue
        a = [r for r in rows if r["variant"] == "a"]
        b = [r for r in rows if r["variant"] == "b"]
        for r in rows:
            r["per"], unit = _per(r)
        time_ratio = statistics.median(_ratios(results, model, "a", "b", "seconds"))
        thr_ratio = statistics.median(_ratios(results, model, "b", "a", "items_per_s"))
        rss_ratio = statistics.median(_ratios(results, model, "a", "b", "peak_rss_mib"))
        window = f"{a[0]['timed_steps']} steps after {a[0]['steps'] - a[0]['timed_steps']}"
        verdict = "met" if time_ratio <= target else "**missed**"
        lines.append(
            f"| {workload.title} | {window} | {_median(a, 'per'):.3f} {unit} | "
            f"{_median(b, 'per'):.3f} {unit} | **{time_ratio:.3f}** | "
            f"{_median(a, 'items_per_s'):,.0f} {workload.unit}/s | "
            f"{_median(b, 'items_per_s'):,.0f} | {thr_ratio:.3f} | "
            f"{_median(a, 'peak_rss_mib'):.0f} MiB | {_median(b, 'peak_rss_mib'):.0f} MiB | "
            f"{rss_ratio:.3f} | {verdict} |"
        )
    return lines


def canonical_table(results: list[dict], device: str) -> list[str]:
    """VAE-MLP: (a) and (b) against the canonical torchvision pipeline (c)."""
    target = CANONICAL_TARGET["cuda" if device.startswith("cuda") else "cpu"]
    rows = [r for r in results if r["model"] == "vae_mlp"]
    if not any(r["variant"] == "c" for r in rows):
        return ["(not measured in this run)"]
    lines = [
        "| pipeline | time | images/s | speed-up over (c), median of per-repetition ratios |",
        "|---|---|---|---|",
    ]
    names = {"a": "(a) litlab train.py", "b": "(b) plain loop, tensor batches",
             "c": "(c) torchvision MNIST + ToTensor + DataLoader(128, shuffle)"}  # fmt: skip
    for variant, name in names.items():
        v = [r for r in rows if r["variant"] == variant]
        per, unit = _per(v[0])
        speedup = statistics.median(_ratios(results, "vae_mlp", "c", variant, "seconds"))
        lines.append(
            f"| {name} | {statistics.median(_per(r)[0] for r in v):.3f} {unit} | "
            f"{_median(v, 'items_per_s'):,.0f} | {speedup:.2f}× |"
        )
    a_speedup = statistics.median(_ratios(results, "vae_mlp", "c", "a", "seconds"))
    verdict = "met" if a_speedup >= target else "**missed**"
    lines += ["", f"Target: litlab's VAE-MLP epoch ≥ {target}× faster than (c): "
              f"{a_speedup:.2f}× — {verdict}."]  # fmt: skip
    return lines


def startup_table(startup: dict | None) -> list[str]:
    """Start-up total against the bare import, and its phases."""
    if not startup:
        return ["(not measured in this run)"]
    total = startup["total"]
    lines = [
        f"`python train.py` (default study, data on disk) to its first training batch: "
        f"**{total:.2f} s** median of {len(startup['totals'])} launches "
        f"({', '.join(f'{t:.2f}' for t in startup['totals'])})."
    ]
    if "ratio" in startup:  # runs before issue 14 did not measure the bare import
        ratio = startup["ratio"]
        verdict = "met" if ratio <= STARTUP_TARGET_RATIO else "**missed**"
        bare = statistics.median(startup["bare"])
        lines += [
            "",
            f'`python -c "import torch, lightning"` in the same run, before each launch: '
            f"{bare:.2f} s median ({', '.join(f'{t:.2f}' for t in startup['bare'])}). Start-up / "
            f"bare import, median of per-launch ratios: **{ratio:.3f}** (CPU seconds: "
            f"{startup['cpu_ratio']:.3f}); target ≤ {STARTUP_TARGET_RATIO}: {verdict}.",
        ]
    lines += [
        "",
        "Where it goes (`python -m benchmarks.startup`: `train.train`'s steps one at a time, "
        "median per phase; it skips `@hydra.main`'s own set-up, which the total includes):",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec:.2f} |" for name, sec in startup["phases"].items()]
    lines.append(f"| **sum** | **{sum(startup['phases'].values()):.2f}** |")
    return lines


def gpu_section(results: list[dict], device: str) -> list[str]:
    """On CUDA: the fast path (g) against the plain loop (b) and litlab's fp32 path (a), and the
    peak GPU memory of every study; otherwise where those rows come from."""
    if not device.startswith("cuda"):
        return [
            "| row | value |",
            "|---|---|",
            "| one GPU: (a)/(b) per study, the VAE-MLP fast path (g), peak GPU memory "
            "| not yet measured |",
            "",
            "No GPU was available to this run: `python -m benchmarks.run --device cuda` measures "
            "these rows (into `benchmarks/RESULTS_GPU.md`; peak GPU memory from "
            "`torch.cuda.max_memory_allocated`).",
        ]
    lines = []
    g = [r for r in results if r["model"] == "vae_mlp" and r["variant"] == "g"]
    if g:
        per = statistics.median(_per(r)[0] for r in g)
        verdict = "met" if per <= FAST_PATH_TARGET_S else "**missed**"
        g_b = statistics.median(_ratios(results, "vae_mlp", "g", "b", "seconds"))
        g_a = statistics.median(_ratios(results, "vae_mlp", "g", "a", "seconds"))
        lines += [
            "VAE-MLP at batch 128 on litlab's fast path, (g) = (a) with `trainer=gpu "
            "model.compile=true` (bf16 autocast, data on the device, fused Adam, inductor):",
            "",
            "| time (g) | (g)/(b) plain fp32 loop | (g)/(a) litlab fp32 | peak GPU memory (g) | "
            f"target ≤ {FAST_PATH_TARGET_S} s/epoch |",
            "|---|---|---|---|---|",
            f"| {per:.3f} s/epoch | {g_b:.3f} | {g_a:.3f} | {_median(g, 'peak_gpu_mib'):.0f} MiB | "
            f"{verdict} |",
            "",
        ]
    lines += ["Peak GPU memory (`torch.cuda.max_memory_allocated`), median over repetitions:", "",
              "| study | (a) | (b) | (g) |", "|---|---|---|---|"]  # fmt: skip
    for model, workload in WORKLOADS.items():
        rows = [r for r in results if r["model"] == model and "peak_gpu_mib" in r]
        if not rows:
            continue
        cells = []
        for variant in "abg":
            v = [r for r in rows if r["variant"] == variant]
            cells.append(f"{_median(v, 'peak_gpu_mib'):.0f} MiB" if v else "–")
        lines.append(f"| {workload.title} | {' | '.join(cells)} |")
    return lines


def raw_table(results: list[dict]) -> list[str]:
    """Every measurement, in the order it ran."""
    gpu = any("peak_gpu_mib" in r for r in results)
    lines = [
        "| rep | study | variant | steps timed | seconds | throughput | peak RSS MiB | "
        + ("peak GPU MiB | " if gpu else "")
        + "load |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for r in results:
        gpu_cell = f"{r.get('peak_gpu_mib', float('nan')):.0f} | " if gpu else ""
        lines.append(
            f"| {r['repeat']} | {r['model']} | {r['variant']} | {r['timed_steps']} | "
            f"{r['seconds']:.3f} | {r['items_per_s']:,.0f} {r['unit']}/s | "
            f"{r['peak_rss_mib']:.0f} | {gpu_cell}{r['load_before']:.2f} |"
        )
    return lines


def write_report(run: dict[str, Any], out: Path) -> None:
    """Write the Markdown report of ``run`` (see :func:`benchmarks.run.main`) to ``out``."""
    args, results = run["args"], run["results"]
    device = args["device"]
    loads = [r["load_before"] for r in results]
    threads = args["threads"] if args["threads"] != "None" else "torch default"
    date = run.get("date") or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flags = " --quick" if args["quick"] == "True" else ""
    lines = [
        "# litlab benchmarks: results",
        "",
        f"Written by `python -m benchmarks.run{flags}` (`make bench`) on {date}, in "
        f"{run['seconds']:.0f} s; device `{device}`, {args['repeats']} repetitions, CPU threads "
        f"per process: {threads}. Method: `benchmarks/run.py` docstring and the notes below.",
        "",
        "## Machine",
        "",
        *(run.get("machine") or machine()),
        f"- Load average (1 min) at start {run['load_start'][0]:.2f}, at end "
        f"{run['load_end'][0]:.2f}; before each measurement min {min(loads):.2f}, median "
        f"{statistics.median(loads):.2f}, max {max(loads):.2f}. The CPU was shared with other "
        "jobs; a load above the core count means the two sides competed for cores, which is "
        "why the variants of a repetition run back to back and ratios are taken pairwise.",
        "",
        "## Framework overhead: (a) litlab `train.py` vs (b) plain PyTorch loop",
        "",
        *overhead_table(results, device),
        "",
        "Time ratios are medians of per-repetition ratios; throughput in the study's unit "
        "(target tokens: real, non-padding tokens). Peak RSS: whole process (`ru_maxrss`).",
        "",
        "## VAE-MLP against the canonical pipeline (c)",
        "",
        *canonical_table(results, device),
        "",
        "## Start-up",
        "",
        *startup_table(run.get("startup")),
        "",
        "## GPU",
        "",
        *gpu_section(results, device),
        "",
        "## Every measurement",
        "",
        *raw_table(results),
        "",
    ]
    if NOTES.exists() and not device.startswith("cuda"):  # the notes discuss the CPU run
        lines += [NOTES.read_text().rstrip(), ""]
    out.write_text("\n".join(lines))
