"""English–French sentence pairs (the PyTorch seq2seq tutorial's ``eng-fra.txt``), French -> English.

Preprocessing is the tutorial's (``NLP From Scratch: Translation with a Sequence to Sequence Network
and Attention``), with the text rules of :mod:`litlab.text` (which the model keeps, to translate raw
sentences the same way):

* :func:`litlab.text.normalize`: unicode -> ASCII (NFD, combining marks dropped), lower-case,
  ``.!?`` split off as their own token, every other run of non-letters becomes one space (so
  ``I'm`` -> ``i m``);
* a pair is kept when both sides have fewer than ``max_length`` (10) words and the English side
  starts with one of :data:`ENG_PREFIXES`.

``keep_period`` chooses between the tutorial's two rules: ``true`` is its older rule, which keeps
``.`` as a token (10,599 pairs from the real file; the report's sentences such as
``je suis plus grand que mes amis .`` are written this way), ``false`` its current rule, which
drops ``.`` (11,445 pairs).

Pairs are split 90/5/5 (seeded) into train/val/test; the vocabularies
(:meth:`litlab.text.Vocab.by_frequency`) come from the training split only, with ``<pad>``
``<sos>`` ``<eos>`` ``<unk>`` at ids 0–3. ``append_eos`` (report Q12) appends
``<eos>`` to both the source and the target, as the tutorial does; without it neither side has one
and the decoder is never taught to stop. Batches are padded (``src_mask`` / ``tgt_mask`` mark real
tokens) and bucketed (:class:`~datamodules.samplers.BucketBatchSampler`): training indices are
shuffled, cut into pools of ``bucket_pools`` batches, sorted by source length inside each pool,
batched, and the batches shuffled again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import LitDataModule, require_nonempty
from datamodules.files import check_sha256, download_file, fetch_missing, find_file, read_text
from datamodules.samplers import BucketBatchSampler
from litlab.errors import ConfigError, DataError
from litlab.ranges import Fraction, Ge, NonNegativeInt, PositiveInt, Seed
from litlab.text import TextRules, Vocab, normalize, pad

log = logging.getLogger(__name__)

# The tutorial's English prefixes (matched on the normalised English side).
ENG_PREFIXES = (
    "i am ", "i m ",
    "he is", "he s ",
    "she is", "she s ",
    "you are", "you re ",
    "we are", "we re ",
    "they are", "they re ",
)  # fmt: skip

# download.pytorch.org/tutorial/data.zip holds data/eng-fra.txt; the archive itself has no
# published checksum, so the extracted member is verified (sha256 of the decompressed text).
ENG_FRA_ARCHIVES = ("https://download.pytorch.org/tutorial/data.zip",)
ENG_FRA_MEMBER = "data/eng-fra.txt"
ENG_FRA_SHA256 = "6b0f3decdb78600485b58efb541f5a2ab69ba888742ac04180e013084e40de7c"
ENG_FRA_FILES = ("eng-fra.txt.gz", "eng-fra.txt")  # looked for in this order


@dataclass
class ParseStats:
    """What happened to each input line."""

    lines: int = 0
    malformed: int = 0  # not exactly two tab-separated fields: skipped
    filtered: int = 0  # too long, wrong English prefix, or an empty side
    kept: int = 0


def parse_pairs(
    lines: Iterable[str],
    max_length: int = TextRules.max_length,
    prefixes: Sequence[str] = ENG_PREFIXES,
    keep_period: bool = TextRules.keep_period,
) -> tuple[list[tuple[str, str]], ParseStats]:
    """``English<TAB>French`` lines -> normalised ``(french, english)`` pairs that pass the filter.

    A line without exactly two fields is skipped and counted (never an error); blank lines are
    ignored. Word counts use ``split(" ")`` as the tutorial does.
    """
    stats = ParseStats()
    pairs: list[tuple[str, str]] = []
    prefixes = tuple(prefixes)
    first_letters = {p[0] for p in prefixes}
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        stats.lines += 1
        fields = line.split("\t")
        if len(fields) != 2:
            stats.malformed += 1
            continue
        # exact shortcut: a line starting with an ASCII letter keeps it as its first character
        head = fields[0].lstrip()[:1].lower()
        if "a" <= head <= "z" and head not in first_letters:
            stats.filtered += 1
            continue
        english = normalize(fields[0], keep_period)
        keep = english.startswith(prefixes) and len(english.split(" ")) < max_length
        french = normalize(fields[1], keep_period) if keep else ""  # most lines stop above
        if french and len(french.split(" ")) < max_length:
            pairs.append((french, english))
            stats.kept += 1
        else:
            stats.filtered += 1
    return pairs, stats


@dataclass
class Example:
    src: list[int]
    tgt: list[int]
    src_text: str
    tgt_text: str


class PairDataset(Dataset):
    """Encoded pairs; ``lengths`` (source lengths) drive the bucketing."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples
        self.lengths = [len(e.src) for e in examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


@dataclass
class Collate:
    """Examples -> ``{"src", "src_mask", "tgt", "tgt_mask", "src_text", "tgt_text"}``.

    ``tgt`` is what the decoder must emit (words, then ``<eos>`` when appended); the decoder's
    inputs are ``<sos>`` followed by ``tgt`` shifted right. ``pad_to`` pads every batch to at least
    that length (the tutorial pads to ``MAX_LENGTH``; it only matters for an unmasked loss).
    """

    pad_to: int = 0

    def __call__(self, examples: list[Example]) -> dict:
        src, src_mask = pad([e.src for e in examples], self.pad_to)
        tgt, tgt_mask = pad([e.tgt for e in examples], self.pad_to)
        return {
            "src": src,
            "src_mask": src_mask,
            "tgt": tgt,
            "tgt_mask": tgt_mask,
            "src_text": [e.src_text for e in examples],
            "tgt_text": [e.tgt_text for e in examples],
        }


NOT_ENG_FRA = (
    "the file is not the tutorial's eng-fra.txt (delete it and download again, "
    "or set data.sha256=null)"
)


def fetch_archive(url: str, dest: Path, sha256: str | None, member: str = ENG_FRA_MEMBER) -> None:
    """Download the zip at ``url``, check its ``member``'s sha256, store it gzip'd as ``dest``.

    Every temporary file is uniquely named and removed; ``dest`` appears whole or not at all.
    """
    fd, name = tempfile.mkstemp(prefix=".data.", suffix=".zip", dir=dest.parent)
    os.close(fd)
    archive = Path(name)
    try:
        download_file(url, archive, None)
        try:
            with zipfile.ZipFile(archive) as zf:
                raw = zf.read(member)
        except (zipfile.BadZipFile, KeyError) as err:
            raise DataError(f"{url}: not a zip archive holding {member} ({err})") from err
    finally:
        archive.unlink(missing_ok=True)
    check_sha256(url, hashlib.sha256(raw).hexdigest(), sha256, NOT_ENG_FRA)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            gzip.GzipFile("eng-fra.txt", "wb", fileobj=handle, mtime=0) as out,
        ):
            out.write(raw)
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)


class EngFraDataModule(LitDataModule):
    """French -> English pairs of the tutorial, split 90/5/5, bucketed padded batches.

    Args:
        data_dir: folder holding ``eng-fra/eng-fra.txt.gz`` (or ``eng-fra.txt``).
        max_length, keep_period, append_eos: the text rules (:class:`litlab.text.TextRules`,
            whose defaults these are): both sides shorter than ``max_length`` words; the
            tutorial's older rule (keeps ``.``) or its current one; ``<eos>`` appended (report Q12).
        val_fraction, test_fraction: held-out shares of the pairs (the rest trains).
        split_seed: seed of the split permutation.
        shuffle_seed: seed of the training batch order (``None``: unseeded).
        min_freq: words rarer than this in the training split become ``<unk>``.
        bucket: batch by similar source length (False: plain random batches, as the tutorial).
        pad_to: pad every batch to at least this length (0: to the longest sentence).
        download: fetch the tutorial archive when the file is missing (checksum verified).
        archives: URLs of zip archives holding ``archive_member``.
        sha256: expected sha256 of the decompressed text (null: not checked).
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt = 256,
        max_length: Annotated[int, Ge(2)] = TextRules.max_length,
        keep_period: bool = TextRules.keep_period,
        append_eos: bool = TextRules.append_eos,
        val_fraction: Fraction = 0.05,
        test_fraction: Fraction = 0.05,
        split_seed: Seed = 0,
        shuffle_seed: Seed | None = 0,
        min_freq: PositiveInt = 1,
        bucket: bool = True,
        bucket_pools: PositiveInt = 50,
        pad_to: NonNegativeInt = 0,
        download: bool = True,
        archives: Sequence[str] = ENG_FRA_ARCHIVES,
        archive_member: str = ENG_FRA_MEMBER,
        sha256: str | None = ENG_FRA_SHA256,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                "positive and sum to less than 1"
            )
        self.save_hyperparameters()
        self.rules = TextRules(
            keep_period=bool(keep_period), append_eos=bool(append_eos), max_length=int(max_length)
        )
        self.folder = Path(data_dir) / "eng-fra"
        self.pairs: list[tuple[str, str]] = []
        self.stats = ParseStats()
        self.split_indices: dict[str, list[int]] = {}
        self.src_vocab: list[str] = []
        self.tgt_vocab: list[str] = []
        self.datasets: dict[str, PairDataset] = {}

    # -- files ---------------------------------------------------------------------------------
    def data_file(self) -> Path | None:
        return find_file(self.folder, *ENG_FRA_FILES)

    def prepare_data(self) -> None:
        """Download the tutorial archive when no ``eng-fra.txt[.gz]`` is found (one process at a
        time; the others wait and find the file)."""
        hp = self.hparams
        fetch_missing(
            self.folder,
            {ENG_FRA_FILES[0]: hp.sha256},
            hp.archives,
            hp.download,
            "eng-fra",
            names=lambda _: ENG_FRA_FILES,
            url=lambda archive, _: archive,
            fetch=lambda url, dest, sha256: fetch_archive(url, dest, sha256, hp.archive_member),
            root=self.folder.parent,
        )

    # -- pairs, splits, vocabularies -----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp, rules = self.hparams, self.rules
        path = self.data_file()
        if path is None:
            self.prepare_data()
            path = self.data_file()
        lines = read_text(path, hp.sha256, NOT_ENG_FRA, errors="replace").split("\n")
        self.pairs, self.stats = parse_pairs(lines, rules.max_length, ENG_PREFIXES,
                                             rules.keep_period)  # fmt: skip
        log.info(
            "eng-fra: %d lines, %d malformed (skipped), %d pairs kept (keep_period=%s)",
            self.stats.lines, self.stats.malformed, self.stats.kept, rules.keep_period,
        )  # fmt: skip
        if not self.pairs:
            raise DataError(
                f"{path}: no usable sentence pair in {self.stats.lines} lines "
                f"({self.stats.malformed} malformed: not 'English<TAB>French'; the rest filtered "
                f"out by max_length={rules.max_length} and the English prefixes)"
            )
        self.split_indices = split_indices(len(self.pairs), hp.val_fraction, hp.test_fraction,
                                           hp.split_seed)  # fmt: skip
        require_nonempty(
            {split: len(indices) for split, indices in self.split_indices.items()}, path,
            f"{len(self.pairs)} usable pairs are too few for data.val_fraction={hp.val_fraction} "
            f"and data.test_fraction={hp.test_fraction}",
        )  # fmt: skip
        train = [self.pairs[i] for i in self.split_indices["train"]]
        src = Vocab.by_frequency((fr for fr, _ in train), hp.min_freq)
        tgt = Vocab.by_frequency((en for _, en in train), hp.min_freq)
        self.src_vocab, self.tgt_vocab = src.words, tgt.words
        for split, indices in self.split_indices.items():
            examples = []
            for i in indices:
                fr, en = self.pairs[i]
                examples.append(
                    Example(src.encode(fr.split(), rules.append_eos),
                            tgt.encode(en.split(), rules.append_eos), fr, en)
                )  # fmt: skip
            self.datasets[split] = PairDataset(examples)

    def model_kwargs(self) -> dict:
        """Vocabularies (plain lists) and the text rules a checkpoint needs to translate."""
        return {
            "src_vocab": list(self.src_vocab),
            "tgt_vocab": list(self.tgt_vocab),
            "preprocessing": asdict(self.rules),
        }

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        hp = self.hparams
        dataset = self.datasets[split]
        sampler = BucketBatchSampler(
            dataset.lengths,
            batch_size,
            shuffle=shuffle,
            pool_batches=hp.bucket_pools if hp.bucket else 1,
            seed=hp.shuffle_seed,
        )
        if shuffle:  # training: continue where a resumed checkpoint left off
            sampler.resume(self.trainer)
        return self.loader(dataset, num_workers=hp.num_workers, batch_sampler=sampler,
                           collate_fn=Collate(hp.pad_to))  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """A seeded permutation of ``range(n)`` cut into disjoint train / val / test index lists."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return {
        "train": order[n_val + n_test :],
        "val": order[:n_val],
        "test": order[n_val : n_val + n_test],
    }
