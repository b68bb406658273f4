"""Seq2Seq pictures: attention heat-maps of fixed sentences, BLEU against source length.

* Every validation (not the sanity check) the fixed ``sentences`` are translated with the model's
  configured search; each attention map (source words x output words) goes to TensorBoard as
  ``attention/<n>`` and to ``figures/attention_<n>.png`` (the latest one; report Figures 6–8).
* After testing, the test hypotheses are grouped by source length (words, without ``<eos>``);
  corpus BLEU-4 per group is written to ``figures/bleu_by_length.{csv,png}`` and all hypotheses to
  ``test_translations.csv``.
* ``python -m litlab.analysis.seq2seq_runs`` compares several runs' CSVs in one figure.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

import lightning as L
from torchmetrics.functional.text import bleu_score

from litlab.callbacks.figures import FigureCallback
from litlab.files import write_csv
from litlab.plotting import plot_attention, plot_curves

DEFAULT_SENTENCES = (
    "je suis plus grand que mes amis .",
    "il a peur de mourir .",
    "elle a cinq ans de moins que moi .",
    "je ne crains pas de mourir .",
)


def slug(text: str, max_length: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_length] or "empty"


def bleu_by_length(records: Sequence[tuple[int, str, str]]) -> list[tuple[int, int, float]]:
    """``(source length, hypothesis, reference)`` -> ``(length, count, corpus BLEU-4)`` per length."""
    groups: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for length, hyp, ref in records:
        groups[length].append((hyp, ref))
    rows = []
    for length in sorted(groups):
        hyps = [h for h, _ in groups[length]]
        refs = [[r] for _, r in groups[length]]
        rows.append((length, len(hyps), float(bleu_score(hyps, refs, n_gram=4))))
    return rows


def plot_bleu_by_length(series: Mapping[str, tuple[Sequence[float], Sequence[float]]]):
    """One BLEU-vs-source-length line per run."""
    return plot_curves(series, "source length (words)", "test BLEU-4", title="BLEU vs length")


class Seq2SeqFigures(FigureCallback):
    """Attention maps of ``sentences`` at every validation; BLEU by source length after test."""

    def __init__(self, dirpath: str | os.PathLike,
                 sentences: Sequence[str] = DEFAULT_SENTENCES) -> None:  # fmt: skip
        super().__init__(dirpath)
        self.sentences = list(sentences)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.sentences:
            return
        if pl_module.hparams.attention == "none":
            return
        for i, result in enumerate(pl_module.translate(self.sentences), start=1):
            if result.attention is None:
                continue
            title = f"epoch {trainer.current_epoch + 1}: {' '.join(result.source)} -> {result.text}"
            fig = plot_attention(
                result.attention, result.source_labels, result.output_labels, title
            )
            self.log_figure(trainer, f"attention/{i}_{slug(self.sentences[i - 1])}", fig,
                            f"attention_{i}_{slug(self.sentences[i - 1])}.png")  # fmt: skip

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = getattr(pl_module, "test_records", [])
        if not records or not trainer.is_global_zero:
            return
        rows = bleu_by_length(records)
        write_csv(self.dirpath / "bleu_by_length.csv", ["src_len", "count", "bleu"], rows)
        series = {pl_module.hparams.attention: ([r[0] for r in rows], [r[2] for r in rows])}
        self.log_figure(trainer, "figures/bleu_by_length", plot_bleu_by_length(series),
                        "bleu_by_length.png")  # fmt: skip
        write_csv(self.dirpath.parent / "test_translations.csv", ["src_len", "hypothesis",
                  "reference"], records)  # fmt: skip
