"""The four benchmarked studies and how litlab's config is composed for them.

Each :class:`Workload` names the study's config (``model=...`` plus an experiment when the issue
asks for one), the unit of its throughput and its timing window. Both sides of a comparison read
the same composed config: model, data, batch size, optimiser, scheduler, clipping and precision all
come from ``conf/``; only the per-run bookkeeping is switched off (:data:`BENCH_OVERRIDES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from litlab.builders import ROOT, compose_config

__all__ = ["FAST_PATH_OVERRIDES", "ROOT", "WORKLOADS", "Workload", "bench_config", "compose_config"]


@dataclass(frozen=True)
class Workload:
    """One benchmarked study.

    ``timed_steps=None`` times one epoch's worth of steps (the window then holds one epoch
    boundary, see :mod:`benchmarks.clock`); otherwise that many steps. On CUDA a step takes
    milliseconds, so the step windows are longer there (``cuda_timed_steps``). ``fast_path``:
    also measure litlab's GPU fast path on CUDA (variant ``g``, :data:`FAST_PATH_OVERRIDES`).
    """

    name: str
    title: str
    overrides: tuple[str, ...]
    unit: str
    warmup_steps: int
    timed_steps: int | None
    canonical: bool = False  # also run the torchvision ToTensor + DataLoader pipeline (c)
    cuda_timed_steps: int | None = None  # the window on CUDA (None: one epoch)
    fast_path: bool = False  # also run variant g on CUDA

    def window(self, device: str) -> tuple[int, int | None]:
        """Warm-up and timed steps on ``device`` (timed None: one epoch)."""
        if device.startswith("cuda"):
            return self.warmup_steps, self.cuda_timed_steps
        return self.warmup_steps, self.timed_steps


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("vae_mlp", "VAE-MLP", ("experiment=vae_mlp_seed",), "images", 30, None, True,
                 fast_path=True),
        # one epoch (430 steps, ~10 s), not 60 steps (~1.4 s): a short window's ratio was noise
        Workload("vae_cnn", "VAE-CNN", ("experiment=vae_cnn_seed",), "images", 10, None,
                 cuda_timed_steps=300),
        # T_max follows trainer.max_epochs, -1 (unbounded) here: the cosine needs a length of its own
        Workload("seq2seq", "Seq2Seq (attention)", ("model=seq2seq_attn", "model.scheduler.T_max=1"),
                 "target tokens", 5, 30,
                 cuda_timed_steps=100),
        Workload("transformer", "Transformer LM (tutorial)", ("model=transformer_tutorial",),
                 "tokens", 3, 20, cuda_timed_steps=300),
    )
}  # fmt: skip

# Same work on both sides: no validation, test, checkpoints, figures or progress bar; fp32.
# Loggers stay on (TensorBoard + CSV every log_every_n_steps), as in every litlab run.
BENCH_OVERRIDES = (
    "callbacks=none",
    "test=false",
    "trainer.limit_val_batches=0",
    "++trainer.enable_checkpointing=false",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "trainer.precision=32-true",
    "trainer.devices=1",
    "trainer.max_epochs=-1",
)


# Variant g: litlab's GPU fast path as a user runs it (the trainer=gpu preset: bf16 autocast,
# data on the device, fused optimiser; and torch.compile with its default backend, inductor).
FAST_PATH_OVERRIDES = ("trainer=gpu", "trainer.precision=bf16-mixed", "model.compile=true")


def bench_config(
    workload: Workload,
    output_dir: Path,
    data_dir: Path | str,
    device: str = "cpu",
    fast_path: bool = False,
) -> DictConfig:
    """The workload's config with :data:`BENCH_OVERRIDES`, on ``device`` (``fast_path``: with
    :data:`FAST_PATH_OVERRIDES` after them)."""
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    overrides = [*workload.overrides, *BENCH_OVERRIDES, f"trainer.accelerator={accelerator}"]
    if fast_path:
        overrides += FAST_PATH_OVERRIDES
    return compose_config(overrides, output_dir, data_dir)
