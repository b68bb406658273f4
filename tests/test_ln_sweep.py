"""The LN-placement study as users run it: a real multirun subprocess, then the report command."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from litlab.analysis.ln_sweep import markdown_ratio_table, report
from tests.conftest import run_python

TINY_SWEEP = [
    "model.d_model=16", "model.num_heads=2", "model.d_ff=16",
    "data.batch_size=4", "data.eval_batch_size=4", "data.bptt=16",
    "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
    "callbacks.grad_probe.init_batches=2", "callbacks.grad_probe.every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0", "logger=csv",
]  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_multirun_then_report(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    cmd = [
        "train.py", "-m", "experiment=ln_placement",
        "model.num_layers=1,2", "model.norm_first=false,true", *TINY_SWEEP,
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = run_python(cmd, data_dir, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/config.yaml"))
    assert len(jobs) == 4
    settings = set()
    for job in jobs:
        cfg = OmegaConf.load(job / "config.yaml")
        settings.add((cfg.model.num_layers, cfg.model.norm_first))
        phases = {row["phase"] for row in read_csv(job / "grad_norms.csv")}
        assert phases == {"init", "train"}
    assert settings == {(1, False), (1, True), (2, False), (2, True)}

    out = tmp_path / "report"
    done = run_python(
        ["-m", "litlab.analysis.ln_sweep", str(sweep), "--out", str(out)], data_dir, 600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| 2 |" in done.stdout  # the ratio table
    for name in ("embedding_grad_vs_depth", "layer_grad_norms", "loss_curves"):
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert read_csv(out / f"{name}.csv"), name
    assert len(read_csv(out / "jobs.csv")) == 4
    depth = read_csv(out / "embedding_grad_vs_depth.csv")
    assert len(depth) == 4 and {r["n_seeds"] for r in depth} == {"1"}
    assert len(read_csv(out / "pre_post_ratio.csv")) == 2
    layers = read_csv(out / "layer_grad_norms.csv")
    # deepest model (2 layers) x 2 placements x 3 weights
    assert len(layers) == 12 and {r["num_layers"] for r in layers} == {"2"}
    losses = read_csv(out / "loss_curves.csv")
    assert {(r["placement"], r["num_layers"]) for r in losses} == {
        ("post-LN", "2"),
        ("pre-LN", "2"),
    }


def fake_job(folder: Path, norm_first: bool, layers: int, seed: int, emb: float,
             warmup: int = 0, lr: float | None = None) -> None:  # fmt: skip
    folder.mkdir(parents=True)
    scheduler = {"warmup_steps": warmup} if warmup else None
    model = {"norm_first": norm_first, "num_layers": layers, "scheduler": scheduler}
    if lr is not None:
        model["optimizer"] = {"lr": lr}
    OmegaConf.save({"seed": seed, "model": model}, folder / "config.yaml")
    rows = ["phase,step,name,layer,norm", f"init,0,embedding,,{emb}"]
    rows += [f"init,0,ffn_out,{i},{emb * (i + 1)}" for i in range(layers)]
    (folder / "grad_norms.csv").write_text("\n".join(rows) + "\n")
    losses = [f",{step},{10 - step / (1 + warmup)}," for step in range(0, 10, 2)]
    vals = [f"0,{step},,{9 - step / (1 + warmup) + seed}" for step in (4, 9)]  # two validations
    (folder / "metrics.csv").write_text(
        "epoch,step,train/loss_step,val/loss\n" + "\n".join(losses + vals) + "\n"
    )


def test_report_aggregates_seeds_and_warmup(tmp_path: Path) -> None:
    """Mean/spread over seeds, pre/post ratio, warm-up jobs kept out of the at-init numbers."""
    sweep, warm = tmp_path / "sweep", tmp_path / "warm"
    for seed, (post, pre) in enumerate([(1e-4, 0.1), (3e-4, 0.3)]):
        fake_job(sweep / f"{seed}_post", False, 4, seed, post)
        fake_job(sweep / f"{seed}_pre", True, 4, seed, pre)
    fake_job(warm / "0_post", False, 4, 0, 5.0, warmup=100)  # would spoil the at-init mean
    fake_job(warm / "1_post", False, 4, 1, 7.0)  # the same setting and seed again: counted once
    fake_job(warm / "2_pre_lr", True, 4, 0, 0.1, lr=3e-3)  # another lr: a curve of its own
    (sweep / "9_failed").mkdir()
    (sweep / "9_failed" / "config.yaml").write_text("seed: 0\n")
    paths = report([sweep, warm], tmp_path / "out")
    depth = read_csv(paths["embedding_csv"])
    post = next(r for r in depth if r["placement"] == "post-LN")
    assert post["n_seeds"] == "2" and float(post["mean"]) == pytest.approx(2e-4)
    assert float(post["min"]) == pytest.approx(1e-4) and float(post["max"]) == pytest.approx(3e-4)
    (ratio,) = read_csv(paths["ratio_csv"])
    assert float(ratio["pre_over_post"]) == pytest.approx(1000)
    curves = {(r["placement"], r["warmup_steps"], r["lr"]) for r in read_csv(paths["loss_csv"])}
    assert curves == {("post-LN", "0", ""), ("pre-LN", "0", ""), ("post-LN", "100", ""),
                      ("pre-LN", "0", "0.003")}  # fmt: skip
    val = read_csv(paths["val_csv"])  # every validation, mean over the seeds: 9 - 4 + (0 + 1) / 2
    pre_at_4 = next(
        r for r in val if r["placement"] == "pre-LN" and r["step"] == "4" and not r["lr"]
    )
    assert pre_at_4["n_seeds"] == "2" and float(pre_at_4["mean_val_loss"]) == pytest.approx(5.5)
    assert len(val) == 8  # 4 settings x 2 validations
    jobs = {r["folder"]: r for r in read_csv(paths["jobs"])}
    assert float(jobs["1_pre"]["val_loss"]) == pytest.approx(1)  # the last validation: 9 - 9 + 1
    assert "| 4 | 0.0002 | 0.2 | 1e+03 |" in markdown_ratio_table([(4, 2e-4, 0.2, 1000.0)])
    with pytest.raises(FileNotFoundError, match="no finished"):
        report([tmp_path / "out"])
