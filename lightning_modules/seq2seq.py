"""Sequence-to-sequence translation (French -> English) with a GRU encoder-decoder and attention.

Training minimises the token cross-entropy of the reference y given the source x,

    loss = - sum_{b,t} m_{bt} log p(y_{bt} | y_{b,<t}, x_b) / sum_{b,t} m_{bt},

where m_{bt} = 1 on real target tokens (``<eos>`` included when appended) and 0 on padding, so
padding never changes the loss. ``mask_loss=false`` averages over every position instead, padding
(``<pad>`` targets) included, as the tutorial's fixed-length batches do.

Teacher forcing (report Q14) is decided **per token**: at each step t and for each sentence
independently, the decoder's next input is the reference y_t with probability
``teacher_forcing_ratio`` and otherwise its own greedy prediction argmax p(. | ...), detached.
Ratio 1 is always teacher-forced, 0 always free-running. Validation and test losses are
teacher-forced; BLEU is computed on free decoding (greedy, or beam search with ``beam_size > 1``),
which stops at ``<eos>`` or after ``max_decode_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import BLEUScore

from lightning_modules.base import STAGES, LitModule, running_mean
from lightning_modules.nets.decoding import beam_search, greedy_decode
from litlab.errors import ConfigError
from litlab.ranges import Interval, NonNegativeFloat, PositiveInt, Probability
from litlab.text import EOS, EOS_TOKEN, PAD, SOS, TextRules, Vocab, normalize, pad

MAX_SOURCE_WORDS = 100  # longer inputs to translate() are truncated


def token_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    masked: bool = True,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean cross-entropy over real tokens (``masked``) or over every position (module docstring).

    ``logits`` ``(B, T, V)``, ``target`` and ``mask`` ``(B, T)``.
    """
    nll = F.cross_entropy(
        logits.transpose(1, 2), target, reduction="none", label_smoothing=label_smoothing
    )
    if not masked:
        return nll.mean()
    mask = mask.to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class Translation:
    """One translated sentence: tokens in and out, and the attention between them."""

    source: list[str]  # normalised source words (as typed, unknown ones included)
    unknown: list[str]  # source words outside the vocabulary (fed as <unk>)
    words: list[str]  # output words, without <eos>
    attention: (
        torch.Tensor | None
    )  # (len(output_labels), len(source_labels)), None without attention
    source_labels: list[str]  # source tokens the encoder saw (+ <eos> when appended)
    output_labels: list[str]  # output tokens the decoder emitted (+ <eos> when it stopped)

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Seq2Seq(LitModule):
    """GRU encoder-decoder: masked teacher-forced training, greedy / beam-search decoding, BLEU.

    Args:
        encoder, decoder: ``_target_`` configs of :mod:`lightning_modules.nets.seq2seq` nets; the
            vocabulary sizes, ``hidden_dim``, ``num_layers`` and ``attention`` are filled in here.
        optimizer, scheduler: ``_target_`` configs (see :class:`LitModule`).
        src_vocab, tgt_vocab: word lists (ids = positions), given by the datamodule.
        preprocessing: ``append_eos``, ``keep_period``, ``max_length`` of the datamodule (used to
            translate raw text the same way).
        hidden_dim, num_layers: GRU sizes shared by encoder and decoder.
        attention: ``bahdanau`` | ``dot`` | ``none`` (report Q13).
        teacher_forcing_ratio: probability that a training step feeds the reference token.
        mask_loss: average the loss over real tokens only (False: the tutorial's unmasked loss).
        label_smoothing: cross-entropy label smoothing during training (0: none).
        beam_size: 1 decodes greedily, more runs beam search.
        length_penalty: beam hypotheses are ranked by log p / length**length_penalty.
        max_decode_length: decoding stops after this many tokens (the tutorial's MAX_LENGTH).
        compile: ``torch.compile`` the encoder and decoder in place (see :class:`LitModule`).
    """

    def __init__(
        self,
        encoder: Mapping[str, Any],
        decoder: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        src_vocab: Sequence[str] = (),
        tgt_vocab: Sequence[str] = (),
        preprocessing: Mapping[str, Any] | None = None,
        hidden_dim: PositiveInt = 256,
        num_layers: PositiveInt = 1,
        attention: Literal["bahdanau", "dot", "none"] = "bahdanau",
        teacher_forcing_ratio: Probability = 1.0,
        mask_loss: bool = True,
        label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        beam_size: PositiveInt = 1,
        length_penalty: NonNegativeFloat = 1.0,
        max_decode_length: PositiveInt = 10,
        compile: bool | Mapping[str, Any] | None = False,
    ) -> None:
        super().__init__(optimizer, scheduler, compile)
        if not src_vocab or not tgt_vocab:
            raise ConfigError(
                "Seq2Seq needs src_vocab and tgt_vocab: use it with data=eng_fra (train.py passes "
                "the datamodule's vocabularies), or load a checkpoint"
            )
        src_vocab, tgt_vocab = list(src_vocab), list(tgt_vocab)
        preprocessing = {**asdict(TextRules()), **dict(preprocessing or {})}
        self.save_hyperparameters()
        self.src_vocab = Vocab(src_vocab)
        self.tgt_vocab = Vocab(tgt_vocab)
        sizes = {"hidden_dim": hidden_dim, "num_layers": num_layers, "padding_idx": PAD}
        self.encoder = self.build_net(encoder, vocab_size=len(self.src_vocab), **sizes)
        self.decoder = self.build_net(
            decoder, vocab_size=len(self.tgt_vocab), attention=attention, **sizes
        )
        self.metrics = nn.ModuleDict()
        for stage in STAGES:
            self.metrics[f"{stage}/loss"] = running_mean()
            self.metrics[f"{stage}/acc"] = MulticlassAccuracy(
                len(self.tgt_vocab), average="micro", ignore_index=PAD
            )
        for stage in ("val", "test"):
            self.metrics[f"{stage}/bleu"] = BLEUScore(n_gram=4)
            for name in ("out_len", "ref_len", "at_max_len"):
                self.metrics[f"{stage}/{name}"] = running_mean()
        self.test_records: list[tuple[int, str, str]] = []  # (source words, hypothesis, reference)

    # -- training-time forward -----------------------------------------------------------------
    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor,
        tgt: torch.Tensor,
        teacher_forcing_ratio: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, V)`` for each target position, and attention ``(B, T, S)`` (or None).

        The first input is ``<sos>``; later inputs follow the teacher-forcing rule (module doc).
        """
        memory, state = self.encoder(src, src_mask)
        keys = self.decoder.keys(memory)  # once per sentence, not per step
        token = src.new_full((src.shape[0],), SOS)
        logits, attention = [], []
        for t in range(tgt.shape[1]):
            step_logits, state, weights = self.decoder(token, state, memory, src_mask, keys)
            logits.append(step_logits)
            attention.append(weights)
            if teacher_forcing_ratio >= 1.0:
                token = tgt[:, t]
            else:
                guess = step_logits.detach().argmax(dim=-1)
                use_ref = torch.rand(tgt.shape[0], device=tgt.device) < teacher_forcing_ratio
                token = torch.where(use_ref, tgt[:, t], guess)
        weights = None if attention[0] is None else torch.stack(attention, dim=1)
        return torch.stack(logits, dim=1), weights

    # -- decoding ------------------------------------------------------------------------------
    def decode(
        self, src: torch.Tensor, src_mask: torch.Tensor, beam_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The configured search (:mod:`lightning_modules.nets.decoding`): greedy for
        ``beam_size == 1``, beam search otherwise; at most ``max_decode_length`` tokens."""
        beam_size = beam_size or self.hparams.beam_size
        max_length = self.hparams.max_decode_length
        if beam_size == 1:
            return greedy_decode(self.encoder, self.decoder, src, src_mask, max_length)
        return beam_search(self.encoder, self.decoder, src, src_mask, beam_size, max_length,
                           self.hparams.length_penalty)  # fmt: skip

    def to_words(self, tokens: torch.Tensor) -> list[list[str]]:
        """Decoded id rows -> word lists (up to ``<eos>``)."""
        return [self.tgt_vocab.decode(row.tolist()) for row in tokens]

    @torch.no_grad()
    def translate(
        self, sentences: Sequence[str], beam_size: int | None = None
    ) -> list[Translation]:
        """Raw sentences -> :class:`Translation` s, normalised like the training data.

        Unknown words become ``<unk>``; an empty (or letter-free) sentence gives an empty output.
        """
        pre = self.hparams.preprocessing
        results: list[Translation | None] = [None] * len(sentences)
        todo: list[tuple[int, list[str], list[int]]] = []
        for i, sentence in enumerate(sentences):
            words = normalize(sentence, pre["keep_period"]).split()[:MAX_SOURCE_WORDS]
            if not words:
                results[i] = Translation([], [], [], None, [], [])
                continue
            todo.append((i, words, self.src_vocab.encode(words, pre["append_eos"])))
        if todo:
            was_training = self.training
            self.eval()
            src, mask = pad([ids for _, _, ids in todo])
            tokens, attention = self.decode(src.to(self.device), mask.to(self.device), beam_size)
            self.train(was_training)
            for row, (i, words, ids) in enumerate(todo):
                out = self.tgt_vocab.decode(tokens[row].tolist())
                stopped = bool((tokens[row] == EOS).any())
                out_labels = [*out, EOS_TOKEN] if stopped else out
                src_labels = [*words, EOS_TOKEN] if pre["append_eos"] else words
                weights = None
                if attention is not None:
                    weights = attention[row, : len(out_labels), : len(ids)].float().cpu()
                unknown = [w for w in words if w not in self.src_vocab]
                results[i] = Translation(words, unknown, out, weights, src_labels, out_labels)
        return results  # type: ignore[return-value]

    # -- steps ---------------------------------------------------------------------------------
    def _shared_step(self, batch: dict, stage: str, batch_idx: int) -> torch.Tensor:
        """Teacher-forced loss and token accuracy; on val/test also decode and score BLEU."""
        src, src_mask, tgt, tgt_mask = (
            batch["src"],
            batch["src_mask"],
            batch["tgt"],
            batch["tgt_mask"],
        )
        training = stage == "train"
        ratio = self.hparams.teacher_forcing_ratio if training else 1.0
        logits, _ = self(src, src_mask, tgt, ratio)
        loss = token_loss(
            logits,
            tgt,
            tgt_mask,
            masked=self.hparams.mask_loss or not training,
            label_smoothing=self.hparams.label_smoothing if training else 0.0,
        )
        self.log_epoch(f"{stage}/loss", loss.detach(), tgt_mask.sum(), batch_idx=batch_idx,
                       prog_bar=True)  # fmt: skip
        self.log_epoch(f"{stage}/acc", logits.detach().argmax(dim=-1), tgt, batch_idx=batch_idx)
        if not training:
            self._score(batch, stage, batch_idx)
        return loss

    def _score(self, batch: dict, stage: str, batch_idx: int) -> None:
        """Decode with the configured search; BLEU-4 and output / reference lengths in words."""
        tokens, _ = self.decode(batch["src"], batch["src_mask"])
        hyps = [" ".join(words) for words in self.to_words(tokens)]
        refs = batch["tgt_text"]
        self.log_epoch(f"{stage}/bleu", hyps, [[ref] for ref in refs], batch_idx=batch_idx,
                       prog_bar=True)  # fmt: skip
        out_len = torch.tensor([len(h.split()) for h in hyps], dtype=torch.float)
        ref_len = torch.tensor([len(r.split()) for r in refs], dtype=torch.float)
        at_max = (out_len >= self.hparams.max_decode_length).float()
        for name, value in (("out_len", out_len), ("ref_len", ref_len), ("at_max_len", at_max)):
            self.log_epoch(f"{stage}/{name}", value.to(self.device), batch_idx=batch_idx)
        if stage == "test":
            for src_text, hyp, ref in zip(batch["src_text"], hyps, refs, strict=True):
                self.test_records.append((len(src_text.split()), hyp, ref))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train", batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val", batch_idx)

    def on_test_epoch_start(self) -> None:
        self.test_records = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "test", batch_idx)

    def on_test_epoch_end(self) -> None:
        """Under DDP, gather every rank's test records, so BLEU by length covers the whole set."""
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            parts: list[list] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(parts, self.test_records)
            self.test_records = [record for part in parts for record in part]
