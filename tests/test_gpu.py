"""The GPU fast path (``trainer=gpu``) on CUDA: ``pytest -m gpu`` on a machine with a GPU.

Every test runs its body on ``cuda`` (marked ``gpu``; skipped, with the reason, where CUDA is
absent) and, where the same check means something on a CPU, on ``cpu`` too: the same preset
(``trainer=gpu``: bf16 autocast, device-resident data, fused optimiser rule) with
``trainer.accelerator=cpu``. So the test bodies are known to work before a GPU is at hand, and CI
collects the CUDA variants as skips. What is checked:

* a tiny fit (train, validate, test) of every study with ``trainer=gpu``: finite metrics, the
  parameters and every batch on the device, bf16 autocast;
* the data tensors (every split of the in-memory data modules) live on the device, and the
  loaders run in the main process;
* the optimiser really is fused on CUDA (``fused=True`` and the fused kernel is what steps), and a
  ``model.optimizer.fused=true`` asked for on the CPU is honoured;
* bf16 training with the VAE's likelihood estimators in float32 (the estimators give bit-equal
  results inside and outside autocast);
* a ``model.compile=true`` checkpoint reloads into an uncompiled model (inductor on CUDA;
  ``aot_eager`` on the CPU, where inductor needs minutes of C++ compilation);
* ``trainer.deterministic=true`` gives identical metrics twice (on CUDA, where every op of the
  study has a deterministic kernel: an op without one is reported as a skip naming it).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

# cuBLAS reads this before its first handle is made; Lightning sets it only when a deterministic
# Trainer is built, which may be after an earlier test has used cuBLAS in this process.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from datamodules.base import InMemoryDataModule  # noqa: E402
from lightning_modules.vae import VAE  # noqa: E402
from tests.conftest import SEQ2SEQ_TINY  # noqa: E402

CUDA = torch.cuda.is_available()
NO_CUDA = (
    "needs CUDA: torch.cuda.is_available() is False here (run `pytest -m gpu` on a machine with "
    "a GPU; scripts/gpu_check.sh does)"
)
ON_CUDA = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=NO_CUDA)]
BOTH = ["cpu", pytest.param("cuda", marks=ON_CUDA)]


def on_both(studies: list[str], fast_on_cpu: tuple[str, ...]) -> list:
    """``(study, device)`` for every study on the CPU (a slow test unless in ``fast_on_cpu``)
    and on CUDA."""
    cpu = [pytest.param(s, "cpu", marks=[] if s in fast_on_cpu else [pytest.mark.slow])
           for s in studies]  # fmt: skip
    return cpu + [pytest.param(s, "cuda", marks=ON_CUDA) for s in studies]


def fast_path(device: str) -> list[str]:
    """The ``trainer=gpu`` preset, on ``device``."""
    return ["trainer=gpu"] if device == "cuda" else ["trainer=gpu", "trainer.accelerator=cpu"]


TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
]
VAE_EVAL = ["model.nll_num_samples=10", "model.naive_num_samples=10", "data.eval_batch_size=100"]
TINY_LM = ["model=transformer_lm", "model.d_model=32", "model.num_heads=2", "model.d_ff=64",
           "model.num_layers=2", "data.batch_size=8", "data.eval_batch_size=8", "data.bptt=16",
           "callbacks.grad_probe.init_batches=1"]  # fmt: skip
STUDIES = {
    "vae_mlp": ["model=vae_mlp", *VAE_EVAL],
    "vae_cnn": ["model=vae_cnn", *VAE_EVAL],
    "vae_cnn_deep": ["model=vae_cnn_deep", *VAE_EVAL],
    "seq2seq_attn": ["model=seq2seq_attn", *SEQ2SEQ_TINY],
    "transformer_lm": TINY_LM,
    "transformer_tutorial": ["model=transformer_tutorial", "data.eval_batch_size=10"],
    "ln_placement": ["experiment=ln_placement", "model.num_layers=2", "model.d_model=32",
                     "model.d_ff=64", "callbacks.grad_probe.init_batches=1", "test=true"],
}  # fmt: skip
FAST_ON_CPU = ("vae_mlp", "seq2seq_attn", "transformer_lm")  # the others' CPU runs are slow tests


def tensors_of(value: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) batch."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for item in value for t in tensors_of(item)]
    return []


class FastPathProbe(L.Callback):
    """Records, as JSON in ``out``, what the fast path looks like inside a real ``train.py`` run:
    the device of the parameters, of every training batch and of the data module's tensors, the
    loader's worker count, the precision, the optimiser's ``fused`` flag, and the dtype of the
    nets' outputs during training."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = Path(out)
        self.facts: dict[str, Any] = {"batch_devices": set(), "train_output_dtypes": set()}
        self._hooks: list[Any] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            if pl_module.training:
                for t in tensors_of(output):
                    if t.is_floating_point():
                        self.facts["train_output_dtypes"].add(str(t.dtype))

        self._hooks = [child.register_forward_hook(record) for child in pl_module.children()]
        self.facts["param_devices"] = sorted({p.device.type for p in pl_module.parameters()})
        self.facts["precision"] = str(trainer.precision)
        self.facts["num_workers"] = trainer.train_dataloader.num_workers

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, *_: Any) -> None:
        self.facts["batch_devices"] |= {t.device.type for t in tensors_of(batch)}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for hook in self._hooks:
            hook.remove()
        optimizer = trainer.optimizers[0]
        self.facts["optimizer"] = type(optimizer).__name__
        self.facts["fused"] = bool(optimizer.param_groups[0].get("fused"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)  # the test split is moved when its loader is made

    def _write(self, trainer: L.Trainer) -> None:
        datamodule = trainer.datamodule
        if isinstance(datamodule, InMemoryDataModule):
            self.facts["data_devices"] = {
                split: sorted({t.device.type for t in dataset.tensors})
                for split, dataset in datamodule.splits.items()
            }
        facts = {k: sorted(v) if isinstance(v, set) else v for k, v in self.facts.items()}
        self.out.write_text(json.dumps(facts))


def fit(make_cfg, run_train, tmp_path: Path, device: str, *overrides: str) -> tuple[dict, dict]:
    """``train(cfg)`` of the tiny study on the fast path with :class:`FastPathProbe`; returns
    the final metrics and the probe's facts."""
    probe = tmp_path / "fast_path.json"
    cfg = make_cfg(
        *fast_path(device), *TINY, *overrides,
        "+callbacks.fast_path._target_=tests.test_gpu.FastPathProbe",
        f"+callbacks.fast_path.out={probe}",
        tiny=False, output_dir=tmp_path / "run",
    )  # fmt: skip
    metrics = run_train(cfg)
    return metrics, json.loads(probe.read_text())


@pytest.mark.parametrize(("study", "device"), on_both(list(STUDIES), FAST_ON_CPU))
def test_tiny_fit_of_every_study(make_cfg, run_train, tmp_path: Path, study: str, device: str):
    metrics, facts = fit(make_cfg, run_train, tmp_path, device, *STUDIES[study])
    assert any(name.startswith("test/") for name in metrics), sorted(metrics)
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    assert not bad, bad
    assert facts["precision"] == "bf16-mixed"
    assert facts["param_devices"] == [device]
    assert facts["batch_devices"] == [device]
    assert "torch.bfloat16" in facts["train_output_dtypes"], facts  # autocast was on


@pytest.mark.parametrize("device", BOTH)
@pytest.mark.parametrize("study", ["vae_mlp", "transformer_lm"])
def test_data_tensors_live_on_the_device(make_cfg, run_train, tmp_path, study, device):
    """Every split's tensors are on the training device after the fit and the test, batches are
    slices of them (already there), and the loaders run in the main process."""
    _, facts = fit(make_cfg, run_train, tmp_path, device, *STUDIES[study])
    assert facts["data_devices"] == {"train": [device], "val": [device], "test": [device]}
    assert facts["batch_devices"] == [device]
    if device == "cuda":
        assert facts["num_workers"] == 0


@pytest.fixture
def fused_adam_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of torch's fused Adam/AdamW step (``torch.optim.adam._fused_adam``)."""
    import torch.optim.adam as adam_module

    calls: list[int] = []
    original = adam_module._fused_adam

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(adam_module, "_fused_adam", counted)
    return calls


@pytest.mark.parametrize("device", BOTH)
def test_optimizer_really_is_fused(make_cfg, run_train, tmp_path, device, fused_adam_calls):
    """On CUDA the VAE's Adam gets ``fused=True`` by itself and the fused kernel steps; on the
    CPU nothing is added (the plain loop's optimiser), but ``model.optimizer.fused=true`` is
    honoured, so the same machinery runs here."""
    _, facts = fit(
        make_cfg, run_train, tmp_path / "auto", device, *STUDIES["vae_mlp"], "test=false"
    )
    assert facts["optimizer"] == "Adam"
    assert facts["fused"] is (device == "cuda")
    assert bool(fused_adam_calls) is (device == "cuda")
    fused_adam_calls.clear()
    _, facts = fit(make_cfg, run_train, tmp_path / "asked", device, *STUDIES["vae_mlp"],
                   "test=false", "+model.optimizer.fused=true")  # fmt: skip
    assert facts["fused"] is True
    assert len(fused_adam_calls) == 3  # one per training step (limit_train_batches=3)


@pytest.mark.parametrize("device", BOTH)
def test_bf16_training_with_float32_likelihood(make_cfg, run_train, tmp_path, device):
    """Training runs under bf16 autocast; the importance-sampled and naive log p(x) run in float32
    inside it: bit-equal to the same estimate outside autocast, from the same random draws."""
    metrics, facts = fit(make_cfg, run_train, tmp_path, device, *STUDIES["vae_mlp"])
    assert "torch.bfloat16" in facts["train_output_dtypes"]
    assert math.isfinite(metrics["test/nll_is"]) and math.isfinite(metrics["test/nll_naive"])
    model = VAE.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt").to(device)
    model.eval()
    x = torch.bernoulli(torch.rand(16, 1, 28, 28, device=device))
    for estimator in (model.importance_sampled_log_px, model.naive_log_px):
        torch.manual_seed(0)
        with torch.autocast(device, dtype=torch.bfloat16):
            assert model.decoder(torch.zeros(1, 20, device=device)).dtype == torch.bfloat16
            inside = estimator(x, 50)
        torch.manual_seed(0)
        outside = estimator(x, 50)
        assert inside.dtype == torch.float32
        torch.testing.assert_close(inside, outside, rtol=0, atol=0)


@pytest.mark.parametrize("device", BOTH)
def test_compiled_checkpoint_reloads_into_uncompiled_model(make_cfg, run_train, tmp_path, device):
    """``model.compile=true`` (inductor on CUDA; aot_eager on the CPU) on the fast path: the
    checkpoint's keys have no ``_orig_mod.``, load strictly into an uncompiled VAE, and that model
    computes on the device."""
    compile_arg = "model.compile=true" if device == "cuda" else "model.compile={backend:aot_eager}"
    frames_before = torch._dynamo.utils.counters["frames"]["ok"]
    metrics, _ = fit(make_cfg, run_train, tmp_path, device, *STUDIES["vae_mlp"], compile_arg)
    assert torch._dynamo.utils.counters["frames"]["ok"] > frames_before  # it did compile
    assert math.isfinite(metrics["test/loss"])
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert not [key for key in state["state_dict"] if "_orig_mod" in key]
    plain = VAE(**(state["hyper_parameters"] | {"compile": False}))
    plain.load_state_dict(state["state_dict"], strict=True)
    loaded = VAE.load_from_checkpoint(path, compile=False).to(device).eval()
    plain = plain.to(device).eval()
    x = torch.rand(4, 1, 28, 28, device=device)
    torch.testing.assert_close(plain(x), loaded(x), rtol=0, atol=0)
    assert loaded.encoder._compiled_call_impl is None


DETERMINISTIC = ["seed=3", "trainer.deterministic=true"]


@pytest.mark.parametrize(
    ("study", "device"),
    on_both(["vae_mlp", "vae_cnn", "seq2seq_attn", "transformer_lm"], ("vae_mlp",)),
)
def test_deterministic_gives_identical_metrics_twice(
    make_cfg, run_train, tmp_path, study, device, restore_determinism
):
    runs = []
    for name in ("first", "second"):
        try:
            metrics, _ = fit(make_cfg, run_train, tmp_path / name, device, *STUDIES[study],
                             *DETERMINISTIC)  # fmt: skip
        except RuntimeError as err:
            if device == "cuda" and "deterministic" in str(err):
                pytest.skip(f"CUDA has no deterministic kernel for an op of {study}: {err}")
            raise
        runs.append({k: v for k, v in metrics.items() if not k.startswith("time/")})
    assert runs[0] == runs[1]


@pytest.fixture
def restore_determinism():
    """Lightning's ``deterministic=True`` switches torch's global flags; put them back."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.benchmark = flags[1]
