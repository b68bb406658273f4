"""litlab's one entry point: ``python train.py model=<name> [key=value ...]``.

Reads top to bottom: seed -> data, model, callbacks, loggers, trainer -> fit -> test the best
(or last: ``test_ckpt``) weights -> hyperparameters with final metrics -> return the metric a
sweeper optimises.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from litlab.builders import (
    CONF_DIR,
    hparams_for_logging,
    instantiate_callbacks,
    instantiate_loggers,
    register_resolvers,
)
from litlab.checkpoints import check_checkpoint, resolve_ckpt_path, save_final_state
from litlab.errors import ConfigError, RunError, describe, user_error
from litlab.hydra_mode import skip_mode_probe
from litlab.loggers import log_hparams_with_metrics
from litlab.rundirs import check_given_folders, check_output_dir, register_fresh_dir
from litlab.scale import refuse_multirun_ddp
from litlab.sweeps import record_completed, register_sweep_job_dir, skip_or_resume
from litlab.validate import check_config, check_fit

log = logging.getLogger(__name__)
register_resolvers()
register_fresh_dir()
register_sweep_job_dir()
# CSVLogger writes <run>/metrics.csv beside the run's other files; its "directory not empty"
# warning is about those files, which it never touches (it only replaces its own metrics.csv).
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test the configured model; return every final metric as a float."""
    check_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.log_dir) / cfg.task_name)
    if not cfg.train and not ckpt_path:
        raise ConfigError("train=false evaluates a checkpoint: pass ckpt_path=<file.ckpt>")
    if rank_zero_only.rank == 0:  # DDP ranks > 0 write into rank 0's folder
        check_output_dir(cfg.paths.output_dir, ckpt_path)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    facts = data_facts(datamodule)
    check_fit(cfg.model, facts, cfg.data._target_)
    model: L.LightningModule = instantiate(cfg.model, _recursive_=False, _convert_="all", **facts)
    if ckpt_path:
        check_checkpoint(ckpt_path, model, facts, resume=cfg.train)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    refuse_multirun_ddp(trainer)  # before Lightning starts any DDP process
    warn_emulated_bf16(trainer)
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)

    metrics: dict[str, float] = {}
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        save_final_state(trainer)
        metrics |= as_floats(trainer.callback_metrics)
    if cfg.test:
        test_ckpt = fitted_checkpoint(trainer, cfg.test_ckpt) if cfg.train else ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
        metrics |= as_floats(trainer.callback_metrics)

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    log_hparams_with_metrics(trainer.loggers, hparams_for_logging(cfg, overrides), metrics)
    if trainer.is_global_zero:  # final_metrics.json: the run completed (a sweep skips it)
        record_completed(cfg.paths.output_dir, metrics)
    return metrics


def data_facts(datamodule: L.LightningDataModule) -> dict:
    """What the model must know about its data before it is built (vocabularies, sizes).

    A :class:`~datamodules.base.LitDataModule` is prepared (in every DDP process: its downloads
    are locked, one process fetches and the others wait) and set up, and the keyword arguments of
    its ``model_kwargs()`` are passed to the model (and so saved in its checkpoints). Any other
    LightningDataModule tells the model nothing.
    """
    from datamodules.base import LitDataModule  # the declared interface (instantiate imports it)

    if not isinstance(datamodule, LitDataModule):
        return {}
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule.model_kwargs()


def fitted_checkpoint(trainer: L.Trainer, which: str) -> str | None:
    """The weights to test after a fit: ``best``, the best checkpoint's path (the monitored
    ``optimized_metric``); ``last``, None, the weights in memory at the end of the fit. Also None
    (with a warning) when no best checkpoint was saved."""
    if which == "last":
        return None
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not path:
        log.warning("No best checkpoint was saved; testing the current weights.")
        return None
    return path


def warn_emulated_bf16(trainer: L.Trainer) -> None:
    """bf16 autocast on a CPU without bf16 instructions (AVX512-BF16 or AMX) emulates its matrix
    products, slower than float32: say so, with the override that avoids it."""
    if not isinstance(trainer.accelerator, CPUAccelerator) or "bf16" not in str(trainer.precision):
        return
    native = (
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)()
        or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )
    if not native:
        log.warning(
            "trainer.precision=%s on a CPU without native bfloat16 (AVX512-BF16 or AMX): its "
            "matrix products are emulated and may run slower than trainer.precision=32-true",
            trainer.precision,
        )


def as_floats(metrics: dict) -> dict[str, float]:
    """Tensor-valued metrics -> plain floats."""
    return {name: float(value) for name, value in metrics.items()}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric``'s final value for sweepers.

    A user error (bad config value, data or checkpoint) ends the run with its one-line message
    and exit status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback.
    """
    try:
        # a job of a re-run sweep: skipped if it completed, resumed from its last.ckpt if killed
        stored = skip_or_resume(cfg)
        metrics = stored if stored is not None else train(cfg)
    except Exception as err:
        found = user_error(err)
        if found is None:
            raise
        where, cause = found
        raise RunError(f"{where}: {describe(cause)}" if where else describe(cause)) from err
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name not in metrics:
        if cfg.train:  # an evaluation-only run has no validation metric to return
            log.warning("optimized_metric=%s was not logged (logged: %s)", name, sorted(metrics))
        return None
    return metrics[name]


def cli() -> None:
    """``python train.py``: the run folder given on the command line is checked first (Hydra
    makes it before any code of ours runs), then Hydra's main."""
    try:
        check_given_folders(sys.argv[1:], rank_zero=rank_zero_only.rank == 0)
    except ConfigError as err:
        print(describe(err), file=sys.stderr)
        sys.exit(1)
    skip_mode_probe(sys.argv[1:], CONF_DIR)  # one composition of the config, not two (start-up)
    main()


if __name__ == "__main__":
    cli()
