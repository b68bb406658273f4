"""The study's TensorBoard CUSTOM SCALARS page, declared in its callbacks config.

``layout`` maps a category to its charts, each chart to one tag regex or a list of them::

    layout:
      VAE:
        "loss (-ELBO, nats)": ^(train|val)/loss$
        ...

A chart draws every (run, tag) of the logdir that matches, so ``^(train|val)/loss$`` puts the
training and validation curves of a run on one chart, and ``^grad_norm/embedding$`` over a
sweep's folder puts every job's curve on one. TensorBoard merges the layouts of all runs it
reads: categories of the same title are joined, identical charts kept once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L

from litlab.loggers import tensorboard_writer

Layout = Mapping[str, Mapping[str, str | Sequence[str]]]


def custom_scalars_layout(layout: Layout) -> dict[str, dict[str, list]]:
    """``{category: {chart: regex or [regex, ...]}}`` -> ``SummaryWriter.add_custom_scalars``'s
    ``{category: {chart: ["Multiline", [regex, ...]]}}``."""
    out: dict[str, dict[str, list]] = {}
    for category, charts in layout.items():
        if not charts:
            raise ValueError(f"TensorBoard layout: category {category!r} has no chart")
        out[category] = {}
        for title, tags in charts.items():
            regexes = [tags] if isinstance(tags, str) else list(tags)
            if not regexes or not all(isinstance(tag, str) and tag for tag in regexes):
                raise ValueError(f"TensorBoard layout: chart {title!r} needs tag regexes")
            out[category][str(title)] = ["Multiline", regexes]
    return out


class TensorBoardLayout(L.Callback):
    """Writes ``layout`` to the run's TensorBoard events once, at setup, on global rank 0."""

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.layout = custom_scalars_layout(layout)  # a bad layout fails before any training
        self._written = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._written or not trainer.is_global_zero:
            return
        writer = tensorboard_writer(trainer)
        if writer is not None:
            writer.add_custom_scalars(self.layout)
            self._written = True
