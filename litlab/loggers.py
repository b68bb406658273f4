"""Helpers around Lightning's loggers: images and extra scalars for every logger, W&B runs, the
TensorBoard writer and its HPARAMS tab.

Lightning hands each logger the metrics of ``self.log`` and the hyperparameters; what it does not
carry, litlab sends here, one function per kind, to every logger that stores it:
:func:`log_image` (figures: TensorBoard's IMAGES tab, MLflow artifacts, W&B media) and
:func:`log_scalars` (the gradient probe's norms). MLflow and W&B are optional extras
(``pip install -e '.[mlflow]'`` / ``'.[wandb]'``, ``logger=mlflow`` / ``logger=wandb``).

TensorBoard's HPARAMS tab reads a metric's value from the run's *last scalar* of that tag, so
the final metrics are the tags the modules already log (``val/loss``, ``test/nll_is``...): no
value is written twice, and the Scalars tab holds no one-point ``final/*`` charts.

Its columns: the server sorts the hyperparameters by ``(not differs, name)`` (``backend_context.
_sort_and_reduce_to_hparams_limit``) and the table shows the first five, and the first five
metrics. The keys the run's command line set are therefore written with ``differs=True``: they
lead, in name order; the rest follow in name order.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

OVERRIDES_KEY = "overrides"  # the run's command-line overrides, as hparams_for_logging writes them
STAGE_ORDER = ("test", "val", "train")  # metric columns: the sweeper's metric, then these stages


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoard logger with what litlab's dashboards need.

    * Lightning's epoch counter goes to ``time/epoch`` (beside ``time/epoch_s``) instead of a
      bare ``epoch`` chart at the top of the Scalars tab (``metrics.csv`` keeps ``epoch``);
    * ``scalar_tags``: every scalar tag it wrote, so HPARAMS lists only metrics it can show;
    * no ``hp_metric`` placeholder by default (HPARAMS: :func:`log_hparams_with_metrics`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)
        self.scalar_tags: set[str] = set()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = dict(metrics)
        if "epoch" in metrics:
            metrics["time/epoch"] = metrics.pop("epoch")
        self.scalar_tags.update(metrics)
        super().log_metrics(metrics, step)


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger, one W&B run per litlab run, also when one process runs several
    (a sweep's jobs): Lightning's logger would reuse a run still open in the process, so an open
    run of an earlier job is finished before this one starts, and a failed run is finished at
    once (exit code 1). The last run is finished by W&B when the process exits.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # wandb warns that the setting is unused
            del self._wandb_init["anonymous"]

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        return super().experiment

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed" and self._experiment is not None:
            self._experiment.finish(exit_code=1)


@rank_zero_only
def log_image(trainer: L.Trainer, tag: str, image: np.ndarray, step: int) -> None:
    """Send an RGB image ``(H, W, 3)`` uint8 to every logger that stores images: TensorBoard
    (IMAGES tab, ``tag`` at ``step``), MLflow (artifact ``images/<tag>/step_<step>.png``) and W&B
    (media ``tag`` with ``trainer/global_step`` = ``step``)."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningTensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            path = f"images/{tag}/step_{step:06d}.png"
            logger.experiment.log_image(logger.run_id, image, artifact_file=path)
        elif isinstance(logger, LightningWandbLogger):
            logger.log_image(key=tag, images=[image], step=step)


@rank_zero_only
def log_scalars(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Scalars that do not go through ``self.log`` (the gradient probe's), to every logger but
    the CSV one (``metrics.csv`` keeps the logged metrics; the probe writes ``grad_norms.csv``)."""
    for logger in trainer.loggers:
        if not isinstance(logger, CSVLogger):
            logger.log_metrics(dict(metrics), step)


def as_image(grid: Any) -> np.ndarray:
    """A ``(C, H, W)`` tensor in [0, 1] (a torchvision grid) as ``(H, W, 3)`` uint8, converted as
    TensorBoard converts floats (x 255, clipped, truncated)."""
    array = grid.detach().float().cpu().numpy()
    if array.shape[0] == 1:
        array = array.repeat(3, axis=0)
    return (array.transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)


def tensorboard_writer(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first TensorBoard logger, or None."""
    for logger in trainer.loggers:
        if isinstance(logger, LightningTensorBoardLogger):
            return logger.experiment
    return None


@rank_zero_only
def log_hparams_with_metrics(
    loggers: Iterable[Logger], hparams: Mapping[str, Any], metrics: Mapping[str, float]
) -> None:
    """Write the run's hyperparameters beside its final metrics (TensorBoard's HPARAMS tab).

    ``hparams``: flat ``key: value`` pairs (:func:`litlab.builders.hparams_for_logging`); the keys
    named in its ``overrides`` entry lead the table. TensorBoard gets one HPARAMS session whose
    metrics are the tags of ``metrics`` it logged, ``optimized_metric`` first, then ``test/*``,
    ``val/*``, ``train/*``; other loggers receive the hyperparameters only.
    """
    hparams = dict(hparams)
    for logger in loggers:
        logger.log_hyperparams(hparams)  # TensorBoard: hparams.yaml (default_hp_metric is off)
        if isinstance(logger, LightningTensorBoardLogger):
            logged = getattr(logger, "scalar_tags", None)
            names = [name for name in metrics if logged is None or name in logged]
            tags = metric_order(names, first=hparams.get("optimized_metric"))
            writer = logger.experiment._get_file_writer()
            for summary in hparams_summaries(hparams, tags, leading_keys(hparams)):
                writer.add_summary(summary)
            logger.save()


def leading_keys(hparams: Mapping[str, Any]) -> list[str]:
    """The keys the run's command line set (named in ``hparams["overrides"]``) that it holds."""
    words = str(hparams.get(OVERRIDES_KEY, "")).split()
    keys = (word.split("=", 1)[0].lstrip("+~") for word in words if "=" in word)
    return [key for key in dict.fromkeys(keys) if key in hparams]


def metric_order(names: Iterable[str], first: str | None = None) -> list[str]:
    """``first``, then ``test/*``, ``val/*``, ``train/*`` and the rest, each in logging order."""

    def rank(name: str) -> tuple[bool, int]:
        stage = name.split("/", 1)[0]
        return name != first, STAGE_ORDER.index(stage) if stage in STAGE_ORDER else 3

    return sorted(names, key=rank)


def hparams_summaries(
    hparams: Mapping[str, Any], metric_tags: Iterable[str], leading: Collection[str] = ()
) -> list:
    """The HPARAMS protos of one run: experiment (columns), session start (values), end.

    ``leading`` keys get ``differs=True``, which TensorBoard sorts first. Values must be bool,
    int, float or str (None is written as ``"null"``, anything else as its ``str``).
    """
    values = {name: tensorboard_value(value) for name, value in hparams.items()}
    order = [*[k for k in values if k in leading], *[k for k in values if k not in leading]]
    infos = [hparam_info(name, values[name], differs=name in leading) for name in order]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metric_tags]
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name in order:
        value = values[name]
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, int | float):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return [
        _hparams_summary(
            metadata.EXPERIMENT_TAG,
            plugin_data_pb2.HParamsPluginData(
                experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
            ),
        ),
        _hparams_summary(
            metadata.SESSION_START_INFO_TAG,
            plugin_data_pb2.HParamsPluginData(session_start_info=start),
        ),
        _hparams_summary(
            metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)
        ),
    ]


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    """A summary holding one HPARAMS message (tensorboard.plugins.hparams.summary without TF)."""
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


def hparam_info(name: str, value: bool | float | str, differs: bool) -> api_pb2.HParamInfo:
    """One HPARAMS column. No value domain for numbers and strings: the first run's experiment
    proto stands for every run of the logdir, and a one-value domain would filter the others out."""
    if isinstance(value, bool):
        info = api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_BOOL, differs=differs)
        info.domain_discrete.extend([False, True])
        return info
    kind = api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, int | float) else api_pb2.DATA_TYPE_STRING
    return api_pb2.HParamInfo(name=name, type=kind, differs=differs)


def tensorboard_value(value: Any) -> bool | float | str:
    """A value HPARAMS can hold: bool, number or string."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)
