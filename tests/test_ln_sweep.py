"""The LN-placement studies as users run them: real multirun subprocesses, then the report commands
(ln_sweep: gradient norms vs depth; lr_sensitivity: final loss vs peak learning rate)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from litlab.analysis import lr_sensitivity
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
        "model.num_layers=1,2", "model.norm=post,pre,peri", *TINY_SWEEP,
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = run_python(cmd, data_dir, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/config.yaml"))
    assert len(jobs) == 6
    settings = set()
    for job in jobs:
        cfg = OmegaConf.load(job / "config.yaml")
        settings.add((cfg.model.num_layers, cfg.model.norm))
        phases = {row["phase"] for row in read_csv(job / "grad_norms.csv")}
        assert phases == {"init", "train"}
    assert settings == {(d, n) for d in (1, 2) for n in ("post", "pre", "peri")}

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
    assert len(read_csv(out / "jobs.csv")) == 6
    depth = read_csv(out / "embedding_grad_vs_depth.csv")
    assert len(depth) == 6 and {r["n_seeds"] for r in depth} == {"1"}
    ratios = read_csv(out / "pre_post_ratio.csv")
    assert len(ratios) == 2 and all(r["pre_over_post"] and r["peri_over_post"] for r in ratios)
    layers = read_csv(out / "layer_grad_norms.csv")
    # deepest model (2 layers) x 3 placements x 3 weights
    assert len(layers) == 18 and {r["num_layers"] for r in layers} == {"2"}
    losses = read_csv(out / "loss_curves.csv")
    assert {(r["placement"], r["num_layers"]) for r in losses} == {
        ("post-LN", "2"),
        ("pre-LN", "2"),
        ("Peri-LN", "2"),
    }


def fake_job(folder: Path, norm: str, layers: int, seed: int, emb: float,
             warmup: int = 0, lr: float | None = None) -> None:  # fmt: skip
    """A finished job's folder; ``norm`` ``"post"``/``"pre"``/``"peri"``, or ``False``/``True``:
    a job of a sweep made before Peri-LN, whose config stores only ``norm_first``."""
    folder.mkdir(parents=True)
    scheduler = {"warmup_steps": warmup} if warmup else None
    placement = (
        {"norm_first": norm} if isinstance(norm, bool) else {"norm": norm, "norm_first": None}
    )
    model = {**placement, "num_layers": layers, "scheduler": scheduler}
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
    """Mean/spread over seeds, pre/post ratio, warm-up jobs kept out of the at-init numbers;
    sweeps made before Peri-LN (norm_first only) read together with new ones."""
    sweep, warm = tmp_path / "sweep", tmp_path / "warm"
    for seed, (post, pre) in enumerate([(1e-4, 0.1), (3e-4, 0.3)]):
        fake_job(sweep / f"{seed}_post", False, 4, seed, post)  # an old sweep's job
        fake_job(sweep / f"{seed}_pre", "pre", 4, seed, pre)
    fake_job(warm / "0_post", "post", 4, 0, 5.0, warmup=100)  # would spoil the at-init mean
    fake_job(warm / "1_post", "post", 4, 1, 7.0)  # the same setting and seed again: counted once
    fake_job(warm / "2_pre_lr", True, 4, 0, 0.1, lr=3e-3)  # another lr: a curve of its own
    fake_job(warm / "3_peri", "peri", 4, 0, 0.05)  # Peri-LN, one seed
    (sweep / "9_failed").mkdir()
    (sweep / "9_failed" / "config.yaml").write_text("seed: 0\n")
    paths = report([sweep, warm], tmp_path / "out")
    depth = read_csv(paths["embedding_csv"])
    post = next(r for r in depth if r["placement"] == "post-LN")
    assert post["n_seeds"] == "2" and float(post["mean"]) == pytest.approx(2e-4)
    assert float(post["min"]) == pytest.approx(1e-4) and float(post["max"]) == pytest.approx(3e-4)
    (ratio,) = read_csv(paths["ratio_csv"])
    assert float(ratio["pre_over_post"]) == pytest.approx(1000)
    assert float(ratio["peri_over_post"]) == pytest.approx(250)
    peri = next(r for r in depth if r["placement"] == "Peri-LN")
    assert peri["n_seeds"] == "1" and float(peri["mean"]) == pytest.approx(0.05)
    assert [r["placement"] for r in depth] == ["post-LN", "pre-LN", "Peri-LN"]
    curves = {(r["placement"], r["warmup_steps"], r["lr"]) for r in read_csv(paths["loss_csv"])}
    assert curves == {("post-LN", "0", ""), ("pre-LN", "0", ""), ("post-LN", "100", ""),
                      ("pre-LN", "0", "0.003"), ("Peri-LN", "0", "")}  # fmt: skip
    val = read_csv(paths["val_csv"])  # every validation, mean over the seeds: 9 - 4 + (0 + 1) / 2
    pre_at_4 = next(
        r for r in val if r["placement"] == "pre-LN" and r["step"] == "4" and not r["lr"]
    )
    assert pre_at_4["n_seeds"] == "2" and float(pre_at_4["mean_val_loss"]) == pytest.approx(5.5)
    assert len(val) == 10  # 5 settings x 2 validations
    jobs = {r["folder"]: r for r in read_csv(paths["jobs"])}
    assert float(jobs["1_pre"]["val_loss"]) == pytest.approx(1)  # the last validation: 9 - 9 + 1
    assert jobs["2_pre_lr"]["placement"] == "pre-LN" and jobs["0_post"]["placement"] == "post-LN"
    table = markdown_ratio_table([(4, 2e-4, 0.2, "", 1000.0, "")])
    assert "| 4 | 0.0002 | 0.2 | - | 1e+03 | - |" in table and "Peri-LN" in table
    with pytest.raises(FileNotFoundError, match="no finished"):
        report([tmp_path / "out"])


# -- learning-rate sensitivity (experiment=ln_lr_sensitivity) ---------------------------------
def test_lr_sensitivity_config_sweeps_lr_placement_depth_warmup(make_cfg) -> None:
    """One multirun: lr x placement x depth x warm-up; the GPU variant at the report's width."""
    sizes = {}
    for name in ("ln_lr_sensitivity", "ln_lr_sensitivity_gpu"):
        cfg = make_cfg(f"experiment={name}", tiny=False)
        hydra = HydraConfig.get()
        assert hydra.mode == RunMode.MULTIRUN
        params = {key: str(value).split(",") for key, value in hydra.sweeper.params.items()}
        assert params["model.norm"] == ["post", "pre", "peri"]
        assert len(params["model.optimizer.lr"]) >= 4 and len(params["model.num_layers"]) == 2
        assert params["model.scheduler.warmup_steps"][0] == "0"
        assert cfg.model.scheduler.decay == "cosine" and cfg.model.scheduler.total_steps is None
        sizes[name] = (cfg.model.d_model, cfg.trainer.accelerator, cfg.trainer.limit_train_batches)
    assert sizes["ln_lr_sensitivity"][:2] == (64, "cpu")
    assert sizes["ln_lr_sensitivity_gpu"][:2] == (200, "gpu")  # the report's width


def fake_lr_job(sweep: Path, name: str, norm: str, layers: int, warmup: int, lr: float,
                final: float | None, seed: int = 0, train: str = "10.4,8.0") -> Path:  # fmt: skip
    """A job folder of the LR sweep: config.yaml and metrics.csv (``final`` None: no validation)."""
    folder = sweep / name
    folder.mkdir(parents=True)
    model = {"norm": norm, "norm_first": None, "num_layers": layers, "optimizer": {"lr": lr},
             "scheduler": {"warmup_steps": warmup, "decay": "cosine"}}  # fmt: skip
    OmegaConf.save({"seed": seed, "model": model}, folder / "config.yaml")
    rows = [f",{10 * i},{loss}," for i, loss in enumerate(train.split(","))]
    if final is not None:
        rows.append(f"0,20,,{final}")
    (folder / "metrics.csv").write_text(
        "epoch,step,train/loss_step,val/loss\n" + "\n".join(rows) + "\n"
    )
    return folder


def test_lr_sensitivity_report(tmp_path: Path, capsys) -> None:
    """Mean over seeds per (placement, depth, warm-up, lr); NaN jobs counted as diverged (from
    summary.csv or metrics.csv); jobs that failed otherwise or never validated are skipped."""
    sweep = tmp_path / "sweep"
    for lr, post, pre, peri in [(1e-3, 6.0, 5.8, 5.7), (1e-2, 7.0, 5.5, 5.4)]:
        fake_lr_job(sweep, f"post_{lr}", "post", 2, 0, lr, post)
        fake_lr_job(sweep, f"pre_{lr}", "pre", 2, 0, lr, pre)
        fake_lr_job(sweep, f"peri_{lr}", "peri", 2, 0, lr, peri)
    fake_lr_job(sweep, "pre_0.001_seed1", "pre", 2, 0, 1e-3, 6.0, seed=1)  # mean 5.9, min-max
    warm = fake_lr_job(sweep, "post_warm", "post", 2, 10, 1e-2, 6.5)  # a panel of its own
    (warm / "hparams.yaml").write_text("vocab_size: 33278\n")  # initial loss ln(33,278) = 10.41
    diverged = fake_lr_job(sweep, "post_0.1", "post", 2, 0, 0.1, None, train="10.4,9.0")
    fake_lr_job(sweep, "pre_0.1", "pre", 2, 0, 0.1, None, train="10.4,nan")  # NaN in metrics.csv
    other = fake_lr_job(sweep, "peri_0.1", "peri", 2, 0, 0.1, None)  # failed, not by a NaN
    fake_lr_job(sweep, "peri_0.3", "peri", 2, 0, 0.3, None)  # still running: no validation
    (sweep / "summary.csv").write_text(
        "job,status,run_dir,error\n"
        f'7,FAILED,{diverged},"NonFiniteLossError: the training loss became nan at step 12"\n'
        f'9,FAILED,{other},"CheckpointError: disk full"\n'
    )
    paths = lr_sensitivity.report([sweep], tmp_path / "out")
    rows = {(r["placement"], r["warmup_steps"], float(r["lr"])): r for r in read_csv(paths["csv"])}
    assert len(rows) == 9
    pre = rows[("pre-LN", "0", 1e-3)]
    assert (pre["n_jobs"], pre["n_diverged"]) == ("2", "0")
    assert float(pre["mean_final_loss"]) == pytest.approx(5.9)
    assert (float(pre["min_final_loss"]), float(pre["max_final_loss"])) == (5.8, 6.0)
    for placement in ("post-LN", "pre-LN"):
        bad = rows[(placement, "0", 0.1)]
        assert (bad["n_diverged"], bad["mean_final_loss"]) == ("1", "")
    assert ("Peri-LN", "0", 0.1) not in rows and ("Peri-LN", "0", 0.3) not in rows
    summary = {(r["placement"], r["warmup_steps"]): r for r in read_csv(paths["summary"])}
    post = summary[("post-LN", "0")]
    assert float(post["best_lr"]) == 1e-3 and float(post["best_final_loss"]) == 6.0
    # mean over lr of min(loss, init) - best: (0 + 1 + (init - 6)) / 3, init the mean of ln(33,278)
    # (one job's hparams.yaml) and the first training loss 10.4 (the 9 other jobs read)
    init = (math.log(33278) + 10.4 * 9) / 10
    assert float(post["lr_sensitivity"]) == pytest.approx((0 + 1.0 + init - 6.0) / 3)
    assert post["n_lrs_diverged"] == "1"
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    jobs = {r["folder"]: r for r in read_csv(paths["jobs"])}
    assert jobs["pre_0.1"]["diverged"] == "True" and jobs["post_warm"]["warmup_steps"] == "10"
    out = capsys.readouterr()
    assert "| pre-LN | 2 | 0 | 5.900 | 5.500 | NaN |" in out.out
    assert "disk full" in out.err and "no validation loss" in out.err
    with pytest.raises(FileNotFoundError, match="no finished learning-rate"):
        lr_sensitivity.report([tmp_path / "out"])


def test_lr_sensitivity_multirun_then_report(tmp_path: Path, data_dir: Path) -> None:
    """The experiment as users run it, narrowed on the command line to 2 tiny jobs, then the
    report command."""
    sweep = tmp_path / "sweep"
    cmd = [
        "train.py", "-m", "experiment=ln_lr_sensitivity", "model.optimizer.lr=3e-3", "model.norm=peri",
        "model.num_layers=1", "model.scheduler.warmup_steps=0,2",
        *(o for o in TINY_SWEEP if not o.startswith("callbacks.grad_probe")),  # no probe here
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = run_python(cmd, data_dir, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(sweep.glob("*/config.yaml"))) == 2
    out = tmp_path / "report"
    done = run_python(["-m", "litlab.analysis.lr_sensitivity", str(sweep), "--out", str(out)],
                      data_dir, 600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_csv(out / "lr_sensitivity.csv")
    assert {(r["placement"], r["warmup_steps"], r["n_diverged"]) for r in rows} == {
        ("Peri-LN", "0", "0"),
        ("Peri-LN", "2", "0"),
    }
    assert all(float(r["mean_final_loss"]) < 11 for r in rows)  # below ln(33,278) + noise
    assert (out / "lr_sensitivity.png").read_bytes()[:4] == b"\x89PNG"


# -- named runs side by side (python -m litlab.analysis.ln_runs) -------------------------------
def test_ln_runs_compares_attenuation_and_losses(tmp_path: Path, capsys) -> None:
    """Attenuation = ||g W2 layer 1|| / ||g W2 layer L|| at init and at the last training probe;
    the training loss is the mean of the last 50 logged steps; a bad spec names itself."""
    from litlab.analysis import ln_runs

    post, pre = tmp_path / "post", tmp_path / "pre"
    fake_job(post, "post", 3, 0, 1.0, lr=1e-3)  # init: ffn_out norms 1, 2, 3 -> 1/3
    fake_job(pre, "pre", 3, 0, 1.0, lr=3e-4)
    probes = {post: [(10, [1e-2, 1.0, 2.0]), (20, [1e-4, 1.0, 4.0])],
              pre: [(10, [3.0, 2.0, 1.5]), (20, [2.0, 2.0, 2.0])]}  # fmt: skip
    for folder, steps in probes.items():
        with open(folder / "grad_norms.csv", "a") as handle:
            for step, norms in steps:
                handle.writelines(f"train,{step},ffn_out,{i},{n}\n" for i, n in enumerate(norms))
    signal = ["phase,step,name,layer,value"] + [
        f"{phase},{step},{name},{layer},{value}"
        for phase, step, top, carry in [("init", 0, 0.1, 0.9), ("train", 10, 0.5, 0.5),
                                         ("train", 20, 0.99, 0.3)]
        for layer in range(3)
        for name, value in [("token_cos", top if layer == 2 else 0.0),
                            ("carry", carry + 0.1 * (layer - 1))]
    ]  # fmt: skip
    (post / "signal.csv").write_text("\n".join(signal) + "\n")  # pre: a run without one
    ln_runs.main([str(tmp_path / "cmp.png"), f"post-LN={post}", f"pre-LN={pre}"])
    rows = {r["run"]: r for r in read_csv(tmp_path / "cmp.csv")}
    assert float(rows["post-LN"]["attenuation at init"]) == pytest.approx(1 / 3)
    assert float(rows["post-LN"]["attenuation (last probe)"]) == pytest.approx(2.5e-5)
    assert float(rows["pre-LN"]["attenuation (last probe)"]) == pytest.approx(1.0)
    assert rows["pre-LN"]["placement"] == "pre" and float(rows["pre-LN"]["lr"]) == 3e-4
    # training losses 10, 8, ..., 2 (5 steps, fewer than 50): mean 6; last validation 9 - 9
    assert float(rows["post-LN"]["train loss (last 50 steps)"]) == pytest.approx(6.0)
    assert float(rows["post-LN"]["val loss (last)"]) == pytest.approx(0.0)
    post_row, pre_row = rows["post-LN"], rows["pre-LN"]
    assert float(post_row["top token cos at init"]) == pytest.approx(0.1)
    assert float(post_row["top token cos (last probe)"]) == pytest.approx(0.99)  # step 20
    assert float(post_row["mean carry at init"]) == pytest.approx(0.9)
    assert float(post_row["mean carry (last probe)"]) == pytest.approx(0.3)
    assert pre_row["top token cos (last probe)"] == pre_row["mean carry at init"] == ""
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert "| post-LN | post | 3 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="expected NAME=RUN_DIR"):
        ln_runs.main([str(tmp_path / "x.png"), str(post)])
