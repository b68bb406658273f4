"""The shell scripts under scripts/: each parses (``bash -n``), and the GPU check
(``scripts/gpu_check.sh``) runs its whole programme on the CPU with ``SMOKE=1``."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"
# what the GPU lease machine already has (the script's header); everything else litlab needs
# must be among the wheels its documented call installs
ON_THE_LEASE_MACHINE = {
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "tensorboard",
    "matplotlib",
}


def test_the_gpu_check_is_the_one_lease_script() -> None:
    assert GPU_CHECK in SCRIPTS
    assert not {"gpu_lm.sh", "gpu_session.sh", "gpu_lib.sh"} & {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gpu_check_installs_every_missing_dependency() -> None:
    """Each dependency in pyproject.toml that the lease machine lacks is in the script's wheel
    list (``pip download ...``), and so are pytest's."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    text = GPU_CHECK.read_text()
    wheels = {m.split("==")[0].lower() for m in re.findall(r"([A-Za-z0-9_.-]+==[\w.]+)", text)}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower() for dep in deps}
    missing = names - ON_THE_LEASE_MACHINE - wheels
    assert not missing, f"not among gpu_check.sh's wheels: {missing}"
    assert {"pytest", "pluggy", "iniconfig", "pygments", "antlr4-python3-runtime"} <= wheels


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_gpu_check_smoke_runs_every_step(tmp_path: Path, data_dir: Path) -> None:
    """``SMOKE=1 bash scripts/gpu_check.sh``: the GPU tests (skipped here), the benchmark, the
    probes, the sized jobs, the timed jobs and the four LN multiruns all finish, and OUT holds
    the summaries, CSVs and archives (no checkpoints in them)."""
    logs, out = tmp_path / "logs", tmp_path / "out"
    env = dict(os.environ, SMOKE="1", LOGS=str(logs), OUT=str(out), PYTHON=sys.executable,
               DATA_DIR=str(data_dir), LITLAB_CACHE=str(tmp_path / "cache"))  # fmt: skip
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.run(["bash", str(GPU_CHECK)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = (out / "status.txt").read_text()
    jobs = {row["job"]: row for row in rows(out / "jobs.csv")}
    expected = {"pytest_gpu", "bench", "ln_seed0", "ln_seed1", "ln_seed2", "ln_warmup",
                "vae_mlp_seed_compile", "probe_lm", "lm", "probe_vae_cnn_deep_likelihood",
                "vae_cnn_deep_likelihood", "probe_vae_mlp_likelihood", "vae_mlp_likelihood"}  # fmt: skip
    assert set(jobs) == expected, status
    failed = {name: row["rc"] for name, row in jobs.items() if row["rc"] != "0"}
    assert not failed, f"{failed}\n{status}"
    plan = {row["job"]: row for row in rows(out / "plan.csv")}
    assert set(plan) == {"lm", "vae_cnn_deep_likelihood", "vae_mlp_likelihood"}
    assert all(1 <= int(row["epochs"]) <= int(row["max_epochs"]) for row in plan.values())
    summary = (out / "summary.md").read_text()
    for heading in ("## pytest -m gpu", "## Default LM", "## VAEs", "## LN-placement sweep"):
        assert heading in summary
    assert re.search(r"\| .*lm \| [\d.]+ \|", summary), summary  # the LM's row, with numbers
    assert "skipped" in (out / "pytest_gpu.log").read_text()  # no CUDA here
    assert (out / "RESULTS_GPU.md").is_file() and (out / "ln_report" / "jobs.csv").is_file()
    for group in ("lm", "vae", "ln"):
        with tarfile.open(out / f"logs_{group}.tgz") as archive:
            names = archive.getnames()
        assert any(name.endswith("metrics.csv") for name in names), group
        assert not [name for name in names if ".ckpt" in name], group


def test_seq2seq_seeds_queues_what_is_missing(tmp_path: Path) -> None:
    """scripts/seq2seq_seeds.sh: finished and unfinished folders are skipped (nothing deleted),
    the rest is trained once per seed (tutorial: first seed only), an unknown job is refused."""
    calls = tmp_path / "calls.txt"
    fake_python = tmp_path / "python"  # records its arguments instead of training
    fake_python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake_python.chmod(0o755)
    logs = tmp_path / "logs"
    (logs / "default_seed12345").mkdir(parents=True)
    (logs / "default_seed12345" / "test_translations.csv").write_text("src_len,hypothesis\n")
    (logs / "default_seed1").mkdir()  # unfinished: left alone
    (logs / "default_seed1" / "train.log").write_text("killed\n")
    env = dict(os.environ, PY=str(fake_python), DATA_DIR=str(tmp_path), SEEDS="12345 1 2")
    script = str(ROOT / "scripts" / "seq2seq_seeds.sh")
    result = subprocess.run([script, str(logs), "default", "tutorial"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "skip" in result.stdout and "(finished)" in result.stdout
    assert "an unfinished run" in result.stdout
    assert (logs / "default_seed1" / "train.log").read_text() == "killed\n"
    trained = sorted(calls.read_text().splitlines())
    assert len(trained) == 2, trained
    assert any(line.startswith("train.py model=seq2seq_attn seed=2 ") for line in trained)
    assert any("model=seq2seq_tutorial seed=12345 " in line for line in trained)
    calls.unlink()  # RECIPE replaces the default's overrides (the first pass's recipe)
    first_pass = "model=seq2seq_attn model.hidden_dim=256 trainer.precision=32-true test_ckpt=best"
    result = subprocess.run([script, str(logs), "no_eos"], env=dict(env, RECIPE=first_pass),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    trained = calls.read_text().splitlines()
    assert len(trained) == 3 and all(f"{first_pass} data.append_eos=false" in t for t in trained)
    result = subprocess.run([script, str(logs), "bogus"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "unknown job 'bogus'" in result.stderr
