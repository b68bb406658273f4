"""TensorBoard as the studies need it, read back from the event files of real runs.

CUSTOM SCALARS: each study's layout (conf/callbacks/<study>.yaml), every chart matching tags the
run logged; Scalars: the modules' tags, ``time/epoch`` instead of ``epoch``, no ``final/*``;
HPARAMS: the overridden keys lead (in TensorBoard's own column order), no ``_target_`` or path,
metrics are logged tags, the sweeper's metric first.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit

from litlab.builders import CONF_DIR, hparams_for_logging
from litlab.callbacks.tensorboard_layout import custom_scalars_layout
from litlab.loggers import metric_order
from tests.conftest import run_python

VAE_SMALL = ["model.nll_num_samples=10", "model.naive_num_samples=10", "data.eval_batch_size=200"]
LN_TINY = [
    "model.num_layers=1", "model.d_model=16", "model.num_heads=2", "model.d_ff=16",
    "data.batch_size=4", "data.eval_batch_size=4", "data.bptt=16",
    "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
    "callbacks.grad_probe.init_batches=2", "callbacks.grad_probe.every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
]  # fmt: skip
STUDY_CATEGORY = {"vae": "VAE: train and val", "seq2seq": "Seq2Seq: train and val",
                  "transformer": "Transformer LM: train and val"}  # fmt: skip
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


class Events:
    """What TensorBoard reads from one run folder (``<run>/tensorboard``)."""

    def __init__(self, run: Path) -> None:
        acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        self.scalars = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
        self.images = acc.Tags()["images"]
        blob = acc.Tensors(custom_scalar_metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0]
        self.layout = layout_pb2.Layout.FromString(blob)
        self.experiment, self.hparams = None, {}
        for content in acc.PluginTagToContent("hparams").values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("experiment"):
                self.experiment = data.experiment
            if data.HasField("session_start_info"):
                self.hparams = dict(data.session_start_info.hparams)

    def charts(self) -> dict[str, list[str]]:
        return {c.title: list(c.multiline.tag) for cat in self.layout.category for c in cat.chart}

    def columns(self) -> list[str]:
        """The HPARAMS columns in the order TensorBoard's server gives them to its table."""
        experiment = api_pb2.Experiment()
        experiment.CopyFrom(self.experiment)
        _sort_and_reduce_to_hparams_limit(experiment)
        return [info.name for info in experiment.hparam_infos]

    def metric_tags(self) -> list[str]:
        return [info.name.tag for info in self.experiment.metric_infos]


def override_keys(overrides: list[str]) -> list[str]:
    """The overridden keys HPARAMS should lead with: no callbacks, paths or folders."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return [k for k in keys if not k.startswith(("paths.", "callbacks.")) and "_dir" not in k]


def check_common(events: Events, leading: list[str]) -> None:
    tags = set(events.scalars)
    assert not [t for t in tags if t.startswith("final/") or t == "epoch"], sorted(tags)
    assert "time/epoch" in tags
    # every chart of the layout shows something this run logged
    for title, regexes in events.charts().items():
        assert any(re.search(rx, t) for rx in regexes for t in tags), (title, regexes)
    columns = events.columns()
    assert columns[: len(leading)] == sorted(leading), columns[:10]
    assert not [c for c in columns if "_target_" in c or "_partial_" in c]
    values = {name: value.string_value for name, value in events.hparams.items()}
    assert not [name for name, text in values.items() if text.startswith("/")]
    # HPARAMS metrics are tags the run logged (their last value is the final value)
    metrics = events.metric_tags()
    assert metrics and set(metrics) <= tags, set(metrics) - tags
    assert metrics == metric_order(metrics, first=events.hparams["optimized_metric"].string_value)


def test_vae_run(make_cfg, run_train) -> None:
    cfg = make_cfg(*VAE_SMALL, "model.z_dim=3", "model.beta=0.5")
    overrides = list(HydraConfig.get().overrides.task)
    metrics = run_train(cfg)
    events = Events(Path(cfg.paths.output_dir))

    assert [c.title for c in events.layout.category] == [
        "VAE: train and val",
        "learning rate and time",
    ]
    charts = events.charts()
    for title, name in (("loss = -ELBO (nats per image)", "loss"),
                        ("reconstruction -log p(x|z)", "recon"), ("KL(q(z|x) || p(z))", "kl")):  # fmt: skip
        (regex,) = charts[title]  # train and val of each metric on one chart
        matched = {tag for tag in events.scalars if re.search(regex, tag)}
        assert matched == {f"train/{name}", f"val/{name}"}
    assert {"samples/means", "reconstructions"} <= set(events.images)

    leading = override_keys(overrides)
    assert {"model.z_dim", "model.beta", "trainer.max_epochs"} <= set(leading)
    check_common(events, leading)
    assert events.hparams["model.z_dim"].number_value == 3
    assert events.hparams["model"].string_value == "vae_mlp"
    assert events.hparams["model.optimizer"].string_value == "Adam"  # a _target_, as its class
    assert "data.data_dir" not in events.hparams
    assert events.metric_tags()[0] == "val/loss"
    assert {"test/nll_is", "test/loss", "train/loss"} <= set(events.metric_tags())
    for tag in ("val/loss", "test/nll_is"):
        assert events.scalars[tag][-1] == pytest.approx(metrics[tag], rel=1e-6)


def test_ln_sweep(tmp_path: Path, data_dir: Path) -> None:
    """A real 2-job sweep: both jobs write the same layout, so TensorBoard merges it into one
    page whose embedding chart draws both jobs; each job's HPARAMS row leads with the sweep."""
    sweep = tmp_path / "sweep"
    cmd = ["train.py", "-m", "experiment=ln_placement", "model.norm_first=false,true",
           *LN_TINY, f"hydra.sweep.dir={sweep}"]  # fmt: skip
    done = run_python(cmd, data_dir, timeout=900, OMP_NUM_THREADS="1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/config.yaml"))
    assert len(jobs) == 2
    runs = [Events(job) for job in jobs]
    assert runs[0].layout == runs[1].layout
    charts = runs[0].charts()
    assert charts["embedding, every run"] == ["^grad_norm/embedding$"]
    assert [c.title for c in runs[0].layout.category][:2] == [
        "Transformer LM: train and val",
        "gradient norms ||dL/dW|| (LN placement)",
    ]
    leading = override_keys(["experiment=ln_placement", "model.norm_first=x", *LN_TINY])
    for events in runs:
        assert len(events.scalars["grad_norm/embedding"]) == 3  # every step of the tiny run
        assert len(events.scalars["signal/token_cos/0"]) == 3  # the forward signal, likewise
        check_common(events, leading)
        assert events.hparams["experiment"].string_value == "ln_placement"
    assert {e.hparams["model.norm_first"].bool_value for e in runs} == {False, True}


def test_seq2seq_run(seq2seq_run: Path) -> None:
    events = Events(seq2seq_run)
    assert events.layout.category[0].title == "Seq2Seq: train and val"
    charts = events.charts()
    assert charts["token accuracy"] == ["^(train|val)/acc$"]
    assert {"val/bleu", "train/acc", "val/acc"} <= set(events.scalars)
    check_common(events, [])


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_its_study_layout(make_cfg, model: str) -> None:
    cfg = make_cfg(f"model={model}")
    callback = instantiate(cfg.callbacks.tensorboard_layout)
    study = next(key for key in STUDY_CATEGORY if model.startswith(key))
    assert next(iter(callback.layout)) == STUDY_CATEGORY[study]
    for charts in callback.layout.values():
        for kind, regexes in charts.values():
            assert kind == "Multiline" and all(re.compile(rx) for rx in regexes)


def test_bad_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="needs tag regexes"):
        custom_scalars_layout({"VAE": {"loss": []}})
    with pytest.raises(ValueError, match="has no chart"):
        custom_scalars_layout({"VAE": {}})


def test_hparams_leave_out_paths_and_targets(make_cfg) -> None:
    cfg = make_cfg("model=transformer_lm", "seed=7", "callbacks.grad_probe.every_n_steps=5")
    hparams = hparams_for_logging(cfg, ["seed=7", "callbacks.grad_probe.every_n_steps=5",
                                        "model=transformer_lm", "paths.data_dir=/data"])  # fmt: skip
    assert list(hparams)[:2] == ["seed", "model"]
    assert "callbacks.grad_probe.every_n_steps=5" in hparams["overrides"]  # not a column
    assert not [k for k in hparams if k.startswith(("callbacks", "paths", "logger"))]
    assert hparams["model"] == "transformer_lm" and hparams["data"] == "wikitext2"
    assert hparams["model.scheduler"] == "WarmupSchedule"  # its _target_, as the class name
    assert not [k for k in hparams if "_target_" in k or "_partial_" in k]
    assert not [k for k, v in hparams.items() if k.endswith("_dir") or str(v).startswith("/")]
    assert list(hparams)[-1] == "overrides"
