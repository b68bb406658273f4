"""Figures are code: the plotting helpers and the report-Q3 KL curve on small inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from litlab.analysis.kl_curve import kl_equal_means, main
from litlab.files import write_csv
from litlab.plotting import plot_curves, save_figure, save_grid, series_to_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_grid_tiles_images(tmp_path: Path) -> None:
    grid = save_grid(torch.rand(6, 1, 28, 28), tmp_path / "g.png", nrow=3)
    assert grid.shape == (3, 2 * 30 + 2, 3 * 30 + 2)  # 2 rows x 3 cols, padding 2
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC


def test_curves_png_and_csv(tmp_path: Path) -> None:
    series = {"train/loss": ([1, 2], [3.0, 2.0]), "val/loss": ([2], [2.5])}
    save_figure(plot_curves(series, "epoch", "loss", logy=True), tmp_path / "c.png")
    write_csv(tmp_path / "c.csv", ["metric", "epoch", "value"], series_to_rows(series))
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    rows = list(csv.reader((tmp_path / "c.csv").read_text().splitlines()))
    assert rows == [["metric", "epoch", "value"], ["train/loss", "1", "3.0"],
                    ["train/loss", "2", "2.0"], ["val/loss", "2", "2.5"]]  # fmt: skip
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_kl_curve_matches_gaussian_kl(tmp_path: Path) -> None:
    x = torch.tensor([0.25, 0.5, 1.0, 2.0], dtype=torch.float64)
    q, p = Normal(torch.zeros(4, dtype=torch.float64), x), Normal(0.0, 1.0)
    torch.testing.assert_close(kl_equal_means(x), kl_divergence(q, p))
    assert kl_equal_means(torch.tensor(1.0)) == 0
    out = main(["--out", str(tmp_path / "kl.png"), "--points", "50"])
    assert out.read_bytes()[:8] == PNG_MAGIC
    rows = list(csv.DictReader((tmp_path / "kl.csv").read_text().splitlines()))
    assert len(rows) == 50 and min(float(r["kl"]) for r in rows) >= 0


def test_kl_curve_rejects_bad_range(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "kl.png"), "--x-min", "0"])


def test_run_summary_reads_metrics_csv(tmp_path: Path) -> None:
    from litlab.analysis.run_summary import main as summary

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss,test/loss\n"
        "0,9,120.0,,\n0,9,,110.0,\n1,19,100.0,,\n1,19,,99.0,\n1,19,,,98.5\n"
    )
    table = summary([str(run), "--columns", "train/loss", "val/loss", "test/loss"])
    assert table.splitlines()[-1] == f"| {run} | 100.00 | 99.00 | 98.50 |"
    table = summary([str(run), "--columns", "train/loss", "test/loss", "--epoch", "0"])
    assert table.splitlines()[-1] == f"| {run} | 120.00 | 98.50 |"
    with pytest.raises(SystemExit, match="metrics.csv not found: is .* a litlab run folder"):
        summary([str(tmp_path), "--columns", "val/loss"])
