"""Start-up time: from typing ``python train.py`` to litlab's first training batch, data on disk.

:func:`total` launches the real command (``python train.py`` with the default study, outputs in a
temporary folder) with a :class:`~benchmarks.clock.FirstBatchProbe` callback and stops it as soon
as the first training batch starts. :func:`breakdown` launches ``python -m benchmarks.startup``,
which goes through ``train.train``'s steps one at a time and stamps each phase (imports, config,
data, model, trainer, fit up to the first batch). Both measure from the parent's launch call, so
the interpreter's own start is included. :func:`bare_import` times ``python -c "import torch,
lightning"`` the same way, the yardstick of the target (start-up <= 1.15 x the bare import,
measured in the same run). :func:`total` and :func:`bare_import` also give the process's CPU
seconds (user + system), which other jobs on a shared CPU inflate much less than the wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# train.py's default study, stopping after one step, outputs in a temporary folder
STOP_AFTER_FIRST_STEP = ("test=false", "++trainer.max_steps=1")


def probe_overrides(out: Path) -> list[str]:
    """Overrides adding the first-batch probe to the default callbacks."""
    return [
        "+callbacks.first_batch._target_=benchmarks.clock.FirstBatchProbe",
        f"+callbacks.first_batch.out={out}",
    ]


def _launch_until(args: list[str], probe: Path, env: dict[str, str], timeout: float) -> float:
    """Launch ``python <args>``; once ``probe`` appears, stop the process; return the launch
    time (``time.time()``)."""
    launched = time.time()
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while not probe.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited ({proc.returncode}): {proc.stderr.read()}")
            if time.time() - launched > timeout:
                raise TimeoutError(f"no first training batch after {timeout} s")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate()
    return launched


def total(tmp: Path, env: dict[str, str], timeout: float = 300) -> dict[str, float]:
    """Seconds from launching ``python train.py`` to its first training batch (``seconds``) and
    the CPU seconds the process had used by then (``cpu``)."""
    probe = tmp / "first_batch.json"
    args = [
        "train.py", *STOP_AFTER_FIRST_STEP, f"hydra.run.dir={tmp / 'run'}",
        f"paths.log_dir={tmp / 'logs'}", *probe_overrides(probe),
    ]  # fmt: skip
    launched = _launch_until(args, probe, env, timeout)
    _wait_for_json(probe)
    stamp = json.loads(probe.read_text())
    return {"seconds": stamp["first_batch"] - launched, "cpu": stamp["cpu"]}


BARE_IMPORT = (
    "import json, time, torch, lightning; "
    "print(json.dumps({'done': time.time(), 'cpu': time.process_time()}))"
)


def bare_import(env: dict[str, str], timeout: float = 300) -> dict[str, float]:
    """``python -c "import torch, lightning"``: seconds from launch to the end of the imports
    (``seconds``, the interpreter's exit not included) and its CPU seconds (``cpu``)."""
    launched = time.time()
    proc = subprocess.run([sys.executable, "-c", BARE_IMPORT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=True)  # fmt: skip
    stamp = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": stamp["done"] - launched, "cpu": stamp["cpu"]}


def breakdown(tmp: Path, data_dir: str, env: dict[str, str], timeout: float = 300) -> dict:
    """Seconds spent in each phase of start-up, in order (see :func:`phases`)."""
    probe, marks = tmp / "first_batch.json", tmp / "phases.json"
    launched = time.time()
    args = ["-m", "benchmarks.startup", str(launched), data_dir, str(tmp)]
    _launch_until(args, probe, env, timeout)
    _wait_for_json(probe)
    stamps = [("launch", launched), *json.loads(marks.read_text())]
    stamps.append(("fit: sanity validation, loggers, loop set-up, first batch fetched",
                   json.loads(probe.read_text())["first_batch"]))  # fmt: skip
    return {name: t - prev for (_, prev), (name, t) in zip(stamps[:-1], stamps[1:], strict=True)}


def _wait_for_json(path: Path, timeout: float = 5) -> None:
    """Wait until ``path`` holds complete JSON (it may be seen mid-write)."""
    end = time.time() + timeout
    while True:
        try:
            json.loads(path.read_text())
            return
        except (ValueError, OSError):
            if time.time() > end:
                raise
            time.sleep(0.01)


def phases(data_dir: str, tmp: Path) -> None:
    """``train.train``'s steps one at a time, stamping ``time.time()`` after each into
    ``tmp/phases.json``; then fit with the first-batch probe (``tmp/first_batch.json``)."""
    stamps = [("python interpreter start", time.time())]

    def mark(name: str) -> None:
        stamps.append((name, time.time()))

    import torch  # noqa: F401

    mark("import torch")
    import torchvision  # noqa: F401  (lightning -> torchmetrics imports it, with torch._dynamo)

    mark("import torchvision (pulled in by torchmetrics)")
    import lightning as L
    import torchmetrics  # noqa: F401

    mark("import lightning, torchmetrics")
    import hydra  # noqa: F401
    from hydra.utils import instantiate

    mark("import hydra, omegaconf")
    import train
    from litlab.builders import compose_config, instantiate_callbacks, instantiate_loggers

    mark("import litlab (train.py, data modules, models, callbacks)")
    overrides = [*STOP_AFTER_FIRST_STEP, *probe_overrides(tmp / "first_batch.json")]
    cfg = compose_config(overrides, tmp / "run", data_dir)
    mark("compose the config (Hydra)")
    L.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    mark("data: check files, read and decode MNIST, split")
    model = instantiate(cfg.model, _recursive_=False, **train.data_facts(datamodule))
    mark("build the model")
    trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_callbacks(cfg.callbacks),
        logger=instantiate_loggers(cfg.logger),
    )
    mark("callbacks, loggers (TensorBoard, CSV), Trainer")
    (tmp / "phases.json").write_text(json.dumps(stamps))
    trainer.fit(model, datamodule=datamodule)


if __name__ == "__main__":
    # python -m benchmarks.startup <launch time> <data dir> <tmp dir>  (see breakdown)
    phases(sys.argv[2], Path(sys.argv[3]))
