"""Helpers around Lightning's loggers: the TensorBoard writer and the HPARAMS tab.

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
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
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
