"""WikiText-2 (word level), as contiguous token streams cut into ``bptt`` windows.

Files: ``<data_dir>/wikitext-2/{train,valid,test}.txt`` (each may also be stored gzip'd as
``.txt.gz``), the ``wiki.*.tokens`` of Merity et al. (2016), identical to pytorch/examples'
``word_language_model/data/wikitext-2``. Tokenisation is pytorch/examples': split each line on
whitespace and append ``<eos>``. The vocabulary is built from the training split in order of first
appearance (:meth:`litlab.text.Vocab.in_order_of_appearance`; 33,278 types, ``<unk>`` and ``<eos>`` included); valid/test words outside it map to
``<unk>`` (there are none in the real files).

Batches: each split is one ``int64`` stream of N tokens, cut into ``n = (N - 1) // bptt`` windows
of ``bptt + 1`` tokens that overlap by one (window k is ``stream[k bptt : (k + 1) bptt + 1]``);
the trailing ``(N - 1) mod bptt`` tokens (< bptt) are not predicted. A batch is a stack of
``batch_size`` windows sliced from the in-memory tensor (moved to the accelerator once); inputs
and targets are the window without its last / first token, shapes ``(B, bptt)`` (batch_first).
Every token after the first of the stream is predicted exactly once per epoch, with a context that
restarts every ``bptt`` tokens as in ``batchify`` / ``get_batch``. Windows are independent for a
Transformer (no state is carried), so the training windows are shuffled.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from datamodules.base import IndexedTensors, InMemoryDataModule
from datamodules.files import fetch_missing, find_file, read_text
from litlab.errors import ConfigError
from litlab.ranges import NonNegativeInt, PositiveInt, Seed
from litlab.text import EOS_TOKEN, IGNORE_INDEX, Vocab

WIKITEXT2_MIRRORS = (
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/",
)

# SHA-256 of the decompressed files (shared/data/PROVENANCE.md).
WIKITEXT2_FILES: dict[str, str] = {
    "train.txt": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
    "valid.txt": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
    "test.txt": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
}
SPLIT_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}
NOT_WIKITEXT2 = "the file is corrupt or not WikiText-2 v1 (delete it and download again)"


def split_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or its gzip'd twin ``folder/name.gz``, whichever exists (plain first)."""
    return find_file(folder, *stored_as(name))


def stored_as(name: str) -> tuple[str, str]:
    """The names a split file may have on disk: plain or gzip'd."""
    return name, f"{name}.gz"


def tokenize(text: str) -> list[str]:
    """pytorch/examples' tokenisation: whitespace-split words, ``<eos>`` at the end of each line."""
    if text and not text.endswith("\n"):
        text += "\n"
    return text.replace("\n", f" {EOS_TOKEN} ").split()


@lru_cache(maxsize=2)
def load_corpus(folder: str, stamp: tuple) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Vocabulary (from train) and the three id streams; cached per folder and file versions.

    ``stamp`` (file sizes and mtimes) only keys the cache: a changed file is read again.
    """
    path = Path(folder)
    texts = {
        split: read_text(split_file(path, name), WIKITEXT2_FILES.get(name), NOT_WIKITEXT2)
        for split, name in SPLIT_FILES.items()
    }
    train_tokens = tokenize(texts["train"])
    vocab = Vocab.in_order_of_appearance(train_tokens)
    streams = {"train": vocab.tensor(train_tokens)}
    for split in ("val", "test"):
        streams[split] = vocab.tensor(tokenize(texts[split]))
    return vocab.words, streams


def window_count(stream: torch.Tensor, bptt: int) -> int:
    """n = (N - 1) // bptt: how many non-overlapping windows of bptt targets the stream holds."""
    n = (len(stream) - 1) // bptt
    if n < 1:
        raise ConfigError(f"a stream of {len(stream)} tokens is too short for bptt={bptt}")
    return n


def check_eval_stride(stride: int, bptt: int) -> None:
    """Refuse an evaluation stride outside 1..bptt (windows would skip or repeat targets)."""
    if not 1 <= stride <= bptt:
        raise ConfigError(f"data.eval_stride={stride} must be between 1 and data.bptt={bptt}")


def windows(stream: torch.Tensor, bptt: int) -> torch.Tensor:
    """``(n, bptt + 1)`` windows of the stream overlapping by one token, n = (N - 1) // bptt."""
    n = window_count(stream, bptt)
    return stream[: n * bptt + 1].unfold(0, bptt + 1, bptt).contiguous()


def sliding_windows(
    stream: torch.Tensor, bptt: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation windows advancing by ``stride`` tokens, and the first target each one scores.

    Returns ``(n, bptt + 1)`` windows and ``(n,)`` positions: window k scores its targets at
    positions >= ``scored_from[k]``. The scored targets are exactly those of
    :func:`windows` (stream[1 : m + 1], m = bptt * ((N - 1) // bptt)), each once; outside the
    first window each is predicted from at least ``bptt - stride`` tokens of context, instead of
    0 to bptt - 1 (mean (bptt - 1) / 2) with non-overlapping windows. ``stride = bptt`` gives
    :func:`windows` with every target scored.
    """
    check_eval_stride(stride, bptt)
    last = (
        window_count(stream, bptt) - 1
    ) * bptt  # the last window of `windows`, so that both score the same targets
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    start = torch.tensor(starts)
    scored_from = torch.zeros_like(start)
    scored_from[1:] = start[:-1] + bptt - start[1:]  # targets up to the previous window's end
    return stream[start[:, None] + torch.arange(bptt + 1)], scored_from


class WikiText2DataModule(InMemoryDataModule):
    """WikiText-2: train/valid/test token streams, ``bptt`` windows, vocabulary from train.

    Args:
        data_dir: folder holding ``wikitext-2/`` (``paths.data_dir``).
        batch_size, eval_batch_size: windows per training / evaluation batch.
        bptt: tokens per window (the model's context length; 35 as pytorch/examples).
        eval_stride: val/test windows advance by this many tokens and score only the targets
            that no earlier window scored (:func:`sliding_windows`); None = ``bptt``.
        shuffle: shuffle the training windows every epoch.
        shuffle_seed: their order is drawn from ``shuffle_seed + epoch`` (None: drawn once).
        download: fetch missing files (checksums verified) when online.
        data_on_device: hold the window tensors on the accelerator (no-op on CPU).
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 20,
        eval_batch_size: PositiveInt = 10,
        bptt: PositiveInt = 35,
        eval_stride: PositiveInt | None = None,
        shuffle: bool = True,
        shuffle_seed: Seed | None = 0,
        download: bool = True,
        mirrors: list[str] | tuple[str, ...] = WIKITEXT2_MIRRORS,
        data_on_device: bool = True,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        if eval_stride is not None:
            check_eval_stride(eval_stride, bptt)
        self.save_hyperparameters()
        self.folder = Path(data_dir) / "wikitext-2"
        self.vocab: list[str] = []
        self.streams: dict[str, torch.Tensor] = {}
        self.splits: dict[str, IndexedTensors] = {}

    def prepare_data(self) -> None:
        """Download the split files found neither plain nor gzip'd (safe in every DDP process at
        once: one downloads, the others wait; :mod:`datamodules.files`)."""
        self._fetch(self.hparams.download)

    def _fetch(self, download: bool) -> None:
        fetch_missing(self.folder, WIKITEXT2_FILES, self.hparams.mirrors, download, "WikiText-2",
                      names=stored_as, root=self.folder.parent)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self._fetch(False)
        paths = [split_file(self.folder, name) for name in WIKITEXT2_FILES]
        stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        self.vocab, self.streams = load_corpus(str(self.folder), stamp)
        bptt = self.hparams.bptt
        stride = self.hparams.eval_stride or bptt
        self.splits = {"train": IndexedTensors(windows(self.streams["train"], bptt))}
        for split in ("val", "test"):
            self.splits[split] = IndexedTensors(*sliding_windows(self.streams[split], bptt, stride))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def model_kwargs(self) -> dict:
        """What the model needs to know: the vocabulary size (train.py's ``data_facts``)."""
        return {"vocab_size": self.vocab_size}

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, bptt + 1)`` windows -> inputs ``(B, bptt)`` and next-token targets ``(B, bptt)``.

        Evaluation batches also carry each window's first scored position; the targets before it
        (context only, scored by an earlier window) become ``IGNORE_INDEX``.
        """
        window, *scored_from = batch
        inputs, targets = window[:, :-1], window[:, 1:]
        if scored_from:
            position = torch.arange(targets.shape[1], device=targets.device)
            targets = targets.masked_fill(position < scored_from[0][:, None], IGNORE_INDEX)
        return inputs, targets
