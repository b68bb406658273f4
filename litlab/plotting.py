"""Figures are code: functions that turn logged numbers or image tensors into PNG files.

Every study's callback calls these; each is tested on small inputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from litlab.files import atomic_write  # noqa: E402

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure to ``path`` (PNG) atomically and close it."""
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in [0, 1] into one grid, save it as PNG, return the grid."""
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, pad_value=0.5)
    with atomic_write(path) as tmp:
        save_image(grid, tmp, format="png")
    return grid


def plot_curves(
    series: Series, xlabel: str, ylabel: str, title: str = "", logy: bool = False
) -> Figure:
    """One line per named series ``{name: (xs, ys)}`` on shared axes."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def series_to_rows(series: Series) -> list[tuple[str, float, float]]:
    """Flatten ``{name: (xs, ys)}`` into ``(name, x, y)`` rows for a CSV file."""
    return [(name, x, y) for name, (xs, ys) in series.items() for x, y in zip(xs, ys, strict=True)]


def plot_attention(
    attention: torch.Tensor, source: Sequence[str], output: Sequence[str], title: str = ""
) -> Figure:
    """Heat-map of attention weights: one row per output token, one column per source token."""
    weights = attention.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(source), 1.0 + 0.45 * len(output)))
    image = ax.imshow(weights, cmap="bone", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), labels=list(source), rotation=60, ha="right")
    ax.set_yticks(range(len(output)), labels=list(output))
    ax.set_xlabel("source (French)")
    ax.set_ylabel("output (English)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig
