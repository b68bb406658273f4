"""Scaling up on CPU: compile in place, fused optimisers, no host syncs per step, DDP with 2 gloo
processes, ``-m`` + DDP refused, batch sharding, SLURM / torchrun configurations."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero_only
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _update_dataloader
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from datamodules.eng_fra import Collate, Example, PairDataset
from datamodules.samplers import BucketBatchSampler
from lightning_modules.base import compile_options, running_mean, with_fused
from lightning_modules.vae import VAE
from litlab.scale import lightning_starts_processes
from tests.conftest import CONF_DIR, run_python
from train import data_facts

EVAL_SMALL = ["model.nll_num_samples=10", "model.naive_num_samples=10", "data.eval_batch_size=100"]

# -- compile ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]
)  # inductor compiles C++ with gcc: ~2 min on 2 cores; aot_eager traces the same graphs
def test_compiled_run_checkpoint_loads_into_uncompiled_model(
    make_cfg, run_train, backend: str
) -> None:
    cfg = make_cfg(f"model.compile={{backend:{backend}}}", *EVAL_SMALL, "test=false")
    frames_before = torch._dynamo.utils.counters["frames"]["ok"]
    run_train(cfg)
    assert torch._dynamo.utils.counters["frames"]["ok"] > frames_before  # it did compile
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert not [key for key in state["state_dict"] if "_orig_mod" in key]
    hparams = state["hyper_parameters"] | {"compile": False}
    plain_model = VAE(**hparams)
    plain_model.load_state_dict(state["state_dict"], strict=True)
    loaded = VAE.load_from_checkpoint(
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True
    )
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(plain_model.eval()(x), loaded.eval()(x), rtol=0, atol=0)


def test_configure_model_compiles_each_net_once_in_place(make_cfg) -> None:
    cfg = make_cfg("model.compile=true")
    model = instantiate(cfg.model, _recursive_=False)
    keys = list(model.state_dict())
    model.configure_model()
    model.configure_model()  # fit then test: still compiled once
    assert model.encoder._compiled_call_impl is not None
    assert model.decoder._compiled_call_impl is not None
    assert list(model.state_dict()) == keys


def test_compile_options() -> None:
    assert compile_options(False) is None and compile_options(None) is None
    assert compile_options(True) == {}
    assert compile_options({"backend": "eager"}) == {"backend": "eager"}
    assert compile_options({"enabled": False, "backend": "eager"}) is None


# -- fused optimiser -------------------------------------------------------------------------


def test_fused_is_added_on_cuda_only_when_supported() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    adamw = {"_target_": "torch.optim.AdamW", "lr": 1e-3}
    assert with_fused(adamw, cuda)["fused"] is True
    assert with_fused({"_target_": "torch.optim.Adam"}, cuda)["fused"] is True
    assert "fused" not in with_fused(adamw, cpu)  # CPU: only when the config asks for it
    assert with_fused({**adamw, "fused": False}, cuda)["fused"] is False  # the config decides
    assert "fused" not in with_fused({**adamw, "foreach": True}, cuda)  # fused xor foreach
    assert "fused" not in with_fused({"_target_": "torch.optim.RMSprop"}, cuda)  # no fused kernel
    # Lightning cannot clip gradients for a fused optimiser (it unscales inside its step)
    assert "fused" not in with_fused(adamw, cuda, clips_gradients=True)


def test_cpu_run_gets_the_plain_optimizer(make_cfg) -> None:
    model = instantiate(make_cfg().model, _recursive_=False)
    optimizer = model.configure_optimizers()
    assert not optimizer.defaults.get("fused")


# -- no host-device sync in the training step --------------------------------------------------

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextmanager
def count_host_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Count calls of the tensor methods that copy a value to the host (a sync on a GPU)."""
    calls: Counter = Counter()

    def wrap(name: str) -> Callable:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            calls[name] += 1
            return original(self, *args, **kwargs)

        return counted

    with monkeypatch.context() as patch:
        for name in SYNCING:
            patch.setattr(torch.Tensor, name, wrap(name))
        yield calls


TINY_LM = ["model=transformer_lm", "model.d_model=16", "model.num_heads=2", "model.d_ff=32",
           "model.num_layers=2", "data.batch_size=4", "data.bptt=16"]  # fmt: skip


@pytest.mark.parametrize(
    "overrides", [["model=vae_mlp", "model.kl_warmup_steps=10"], TINY_LM], ids=["vae", "lm"]
)
def test_training_step_never_syncs_with_the_host(make_cfg, monkeypatch, overrides) -> None:
    cfg = make_cfg(*overrides, "logger=none", "test=false")
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, _recursive_=False, **data_facts(datamodule))
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
    step = model.training_step
    syncs: list[Counter] = []

    def watched(batch, batch_idx):
        with count_host_syncs(monkeypatch) as calls:
            loss = step(batch, batch_idx)
        syncs.append(calls)
        return loss

    monkeypatch.setattr(model, "training_step", watched)
    trainer.fit(model, datamodule=datamodule)
    assert len(syncs) == cfg.trainer.limit_train_batches
    assert all(not calls for calls in syncs), syncs


def test_running_mean_keeps_weights_and_nans(monkeypatch) -> None:
    """Token-weighted epoch means without a host sync per update (torchmetrics' "disable"
    NaN strategy alone would drop the weights: a mean of batch means)."""
    mean = running_mean()
    with count_host_syncs(monkeypatch) as calls:
        mean.update(torch.tensor(2.0), weight=torch.tensor(40))
        mean.update(torch.tensor(3.0), weight=torch.tensor(32))
    assert not calls
    assert mean.compute().item() == pytest.approx((2 * 40 + 3 * 32) / 72)
    mean.update(torch.tensor([1.0, 5.0]))  # per-item values, unit weights
    assert mean.compute().item() == pytest.approx((2 * 40 + 3 * 32 + 6) / 74)
    mean.update(torch.tensor(float("nan")))
    assert math.isnan(mean.compute().item())  # a NaN loss stays visible


# -- batch sharding ----------------------------------------------------------------------------


def tiny_pairs(n: int) -> PairDataset:
    return PairDataset([Example([1] * (1 + i % 7), [1], f"s{i}", f"t{i}") for i in range(n)])


def sharded_loaders(shuffle: bool, n: int = 101, world: int = 2) -> list[DataLoader]:
    """The eng-fra loader as Lightning rebuilds it for each DDP rank (sampler injection)."""
    dataset = tiny_pairs(n)
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        sampler = BucketBatchSampler(dataset.lengths, 8, shuffle=shuffle, pool_batches=2, seed=3)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=Collate())
    return [
        _update_dataloader(
            loader,
            DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle),
            mode=RunningStage.TRAINING,
        )
        for rank in range(world)
    ]


@pytest.mark.parametrize("shuffle", [True, False])
def test_bucket_sampler_shards_across_ranks(shuffle: bool) -> None:
    loaders = sharded_loaders(shuffle)
    epochs = []
    for _ in range(2):
        batches = [list(loader.batch_sampler) for loader in loaders]  # one epoch on each rank
        shards = [[i for batch in rank_batches for i in batch] for rank_batches in batches]
        assert len(shards[0]) == len(shards[1]) == 51  # ceil(101 / 2): padded like DDP's sampler
        assert [len(b) for b in batches] == [len(loader) for loader in loaders] == [7, 7]
        assert set(shards[0]) | set(shards[1]) == set(range(101))
        assert len(set(shards[0]) & set(shards[1])) == 1  # only the one padding index repeats
        epochs.append(shards)
    assert (epochs[0] != epochs[1]) == shuffle  # a new split every epoch when shuffling


def test_bucket_sampler_alone_is_unsharded_and_unchanged() -> None:
    lengths = tiny_pairs(50).lengths
    a = BucketBatchSampler(lengths, 8, True, pool_batches=2, seed=3)
    batches = list(a)
    assert sorted(i for b in batches for i in b) == list(range(50))
    generator = torch.Generator().manual_seed(3)  # the single-process order of earlier versions
    order = torch.randperm(50, generator=generator).tolist()
    first_pool = sorted(order[:16], key=lambda i: lengths[i])
    assert first_pool[:8] in batches and first_pool[8:] in batches


# -- DDP on CPU: 2 gloo processes --------------------------------------------------------------

# The val set is 400 images in 100-image batches: 4 batches in one process, 2 per rank in two,
# no padding, so both runs average the same 400 per-image values. lr=0 keeps the seeded initial
# weights (DDP broadcasts rank 0's), so both validate the same model.
SAME_MODEL_AND_DATA = [
    "model=vae_mlp", "model.optimizer.lr=0", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=null", "trainer.limit_test_batches=1", "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0", "data.val_size=400", *EVAL_SMALL,
]  # fmt: skip


def last_metric(path: Path, name: str) -> float:
    with open(path) as handle:
        values = [row[name] for row in csv.DictReader(handle) if row.get(name)]
    return float(values[-1])


def test_ddp_two_cpu_processes_one_run_folder_same_val_metric(
    make_cfg, run_train, tmp_path: Path, data_dir: Path
) -> None:
    logs = tmp_path / "logs"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    result = run_python(["train.py", *SAME_MODEL_AND_DATA, *ddp, f"paths.log_dir={logs}"],
                        data_dir, timeout=240, OMP_NUM_THREADS="1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    runs = list((logs / "vae_mlp" / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 1 worked in rank 0's timestamped folder
    assert [p.name for p in logs.iterdir()] == ["vae_mlp"]
    run = runs[0]
    assert len(list(logs.rglob("config.yaml"))) == 2  # <run>/config.yaml and <run>/.hydra/
    assert len(list(logs.rglob(".hydra"))) == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "figures" / "samples_means_epoch001.png").is_file()

    single = make_cfg(*SAME_MODEL_AND_DATA, tiny=False, output_dir=tmp_path / "single")
    run_train(single)
    ddp_kl = last_metric(run / "metrics.csv", "val/kl")
    single_kl = last_metric(Path(single.paths.output_dir) / "metrics.csv", "val/kl")
    # KL(q(z|x) || p(z)) is deterministic given the weights: equal up to summation order
    assert ddp_kl == pytest.approx(single_kl, rel=1e-5)
    # the loss adds -log p(x|z) at one random z per image: ranks draw other z than one process;
    # untrained, the decoder barely depends on z (spread ~1e-4 of ~543 nats measured)
    ddp_loss = last_metric(run / "metrics.csv", "val/loss")
    single_loss = last_metric(Path(single.paths.output_dir) / "metrics.csv", "val/loss")
    assert ddp_loss == pytest.approx(single_loss, rel=2e-3)


def test_multirun_with_ddp_is_refused_with_one_clear_line(tmp_path: Path, data_dir: Path) -> None:
    result = run_python(
        ["train.py", "-m", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "seed=1", f"paths.log_dir={tmp_path}"],
        data_dir, timeout=120, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert result.returncode != 0
    assert "MultirunDDPError: -m (multirun) with trainer.devices=2" in result.stderr
    assert "hydra/launcher=slurm" in result.stderr
    assert "Starting with 2 processes" not in result.stdout + result.stderr


# -- multi-node: SLURM (hydra-submitit-launcher) and torchrun -----------------------------------

SLURM_TASK_5_OF_8 = {
    "SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NAME": "vae_mlp",
    "SLURM_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "1234", "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
}  # fmt: skip


@pytest.fixture
def keep_rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DDP Trainer built under SLURM / torchrun variables sets the process-wide rank that
    ``rank_zero_only`` reads; put it back afterwards, or later tests would stop writing files."""
    for rank_zero_only in (fabric_rank_zero_only, utils_rank_zero_only):
        monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)


def cpu_trainer(cfg) -> L.Trainer:
    """The configured Trainer, on CPU processes instead of GPUs (no GPU needed to build it)."""
    return instantiate(cfg.trainer, accelerator="cpu", logger=False)


def test_slurm_launcher_config_drives_sbatch_and_lightning(
    make_cfg, tmp_path: Path, monkeypatch, keep_rank_zero
) -> None:
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4",
                 "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        full = compose("train", overrides=overrides, return_hydra_config=True)
    launcher_cfg = full.hydra.launcher
    assert launcher_cfg.nodes == 2 and launcher_cfg.tasks_per_node == 4
    assert launcher_cfg.gpus_per_node == 4 and launcher_cfg.partition == "gpu"
    assert launcher_cfg.timeout_min == 60

    # what the launcher would submit (a fake srun on PATH; nothing is submitted)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin), prepend=":")
    executors = []

    def capture(executor, *args):
        executors.append(executor)
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=None, task_function=None, config=full)
    launcher.launch([["seed=1"]], initial_job_idx=0)
    sbatch = executors[0]._executor._make_submission_file_text("command", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
                 "--time=60"):  # fmt: skip
        assert f"#SBATCH {line}\n" in sbatch

    # inside one of those tasks Lightning finds its rank in SLURM_* and starts no process
    cfg = make_cfg(*overrides[1:4], tiny=False)
    for name, value in SLURM_TASK_5_OF_8.items():
        monkeypatch.setenv(name, value)
    trainer = cpu_trainer(cfg)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (8, 5, 1)
    assert not lightning_starts_processes(trainer)  # so -m + DDP is fine under SLURM


def test_torchrun_is_detected_and_starts_no_process(make_cfg, monkeypatch, keep_rank_zero) -> None:
    cfg = make_cfg("trainer=ddp", "trainer.devices=2", tiny=False)
    assert lightning_starts_processes(cpu_trainer(cfg))  # plain `python train.py`: Lightning does
    torchrun_rank_1 = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "GROUP_RANK": "0",
                       "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                       "TORCHELASTIC_RUN_ID": "none"}  # fmt: skip
    for name, value in torchrun_rank_1.items():
        monkeypatch.setenv(name, value)
    trainer = cpu_trainer(cfg)
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert trainer.global_rank == 1
    assert not lightning_starts_processes(trainer)
