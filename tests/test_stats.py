"""Seed statistics (litlab.analysis.stats) and the Seq2Seq seed table built on them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from litlab.analysis import seq2seq_runs
from litlab.analysis.stats import mean_std, student_t_sf2, welch_t_test


def test_mean_std() -> None:
    assert mean_std([2.0, 4.0, 9.0]) == pytest.approx((5.0, math.sqrt(13.0)))
    assert mean_std([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


@pytest.mark.parametrize(
    ("t", "nu", "p"),  # two-sided critical values of Student's t tables
    [
        (12.706, 1, 0.05),
        (4.303, 2, 0.05),
        (2.776, 4, 0.05),
        (9.925, 2, 0.01),
        (1.960, 1e6, 0.05),
        (0.0, 3, 1.0),
        (-2.776, 4, 0.05),
    ],  # fmt: skip
)
def test_student_t_tail_matches_tables(t: float, nu: float, p: float) -> None:
    assert student_t_sf2(t, nu) == pytest.approx(p, abs=2e-4)


def test_welch_t_test() -> None:
    t, nu, p = welch_t_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.5])
    # by hand: means 2 and 5.1667, variances 1 and 1.5833 -> t = -3.4125, nu = 3.806
    assert t == pytest.approx(-3.4125, abs=1e-4) and nu == pytest.approx(3.806, abs=1e-3)
    assert 0.02 < p < 0.04
    assert welch_t_test([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    assert welch_t_test([1.0, 1.0], [2.0, 2.0])[2] == 0.0
    with pytest.raises(ValueError):
        welch_t_test([1.0], [2.0, 3.0])


def fake_run(folder: Path, bleu: float, val_bleu: float = 0.5) -> Path:
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "bleu_by_length.csv").write_text(
        f"src_len,count,bleu\n3,4,{bleu - 0.2}\n"
    )
    rows = [
        {"epoch": "0", "val/bleu": str(val_bleu)},
        {
            "epoch": "1",
            "test/bleu": str(bleu),
            "test/out_len": "6",
            "test/at_max_len": "0.01",
            "time/fit_s": "300",
        },  # fmt: skip
    ]
    names = ["epoch", "val/bleu", "test/bleu", "test/out_len", "test/at_max_len", "time/fit_s"]
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_seed_table_from_run_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = [fake_run(tmp_path / f"a{i}", b) for i, b in enumerate((0.60, 0.62, 0.64))]
    b = [fake_run(tmp_path / f"b{i}", b) for i, b in enumerate((0.30, 0.31, 0.29))]
    out = tmp_path / "seeds.png"
    seq2seq_runs.main(["seeds", str(out), "a=" + ",".join(map(str, a)),
                       "b=" + ",".join(map(str, b))])  # fmt: skip
    table = capsys.readouterr().out
    assert "| a | 3 | 62.00 ± 2.00 |" in table and "| b | 3 | 30.00 ± 1.00 |" in table
    with open(out.with_suffix(".csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert math.isnan(float(rows[0]["p (test BLEU vs first)"]))
    assert float(rows[1]["p (test BLEU vs first)"]) < 0.01
    assert out.is_file() and out.stat().st_size > 0
    seq2seq_runs.main(["length", str(tmp_path / "len.png"), "a=" + ",".join(map(str, a[:2]))])
    rows = (tmp_path / "len.csv").read_text().splitlines()
    name, length, bleu = rows[1].split(",")
    assert rows[0] == "run,src_len,bleu" and (name, float(length)) == ("a", 3.0)
    assert float(bleu) == pytest.approx(0.41)  # the mean of the two runs' 0.40 and 0.42


def test_seed_table_names_an_unfinished_run(tmp_path: Path) -> None:
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,val/bleu\n0,0.4\n")
    with pytest.raises(SystemExit, match="unfinished: no test/bleu"):
        seq2seq_runs.main(["seeds", str(tmp_path / "x.png"), f"a={run}"])
