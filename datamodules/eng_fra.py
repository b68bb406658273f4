"""English–French sentence pairs (the PyTorch seq2seq tutorial's ``eng-fra.txt``), French -> English.

Preprocessing is the tutorial's (``NLP From Scratch: Translation with a Sequence to Sequence Network
and Attention``):

* unicode -> ASCII (NFD, combining marks dropped), lower-case, ``.!?`` split off as their own token,
  every other run of non-letters becomes one space (so ``I'm`` -> ``i m``);
* a pair is kept when both sides have fewer than ``max_length`` (10) words and the English side
  starts with one of :data:`ENG_PREFIXES`.

``keep_period`` chooses between the tutorial's two rules: ``true`` is its older rule, which keeps
``.`` as a token (10,599 pairs from the real file; the report's sentences such as
``je suis plus grand que mes amis .`` are written this way), ``false`` its current rule, which
drops ``.`` (11,445 pairs).

Pairs are split 90/5/5 (seeded) into train/val/test; the vocabularies come from the training split
only, with ``<pad>`` ``<sos>`` ``<eos>`` ``<unk>`` at ids 0–3. ``append_eos`` (report Q12) appends
``<eos>`` to both the source and the target, as the tutorial does; without it neither side has one
and the decoder is never taught to stop. Batches are padded (``src_mask`` / ``tgt_mask`` mark real
tokens) and bucketed: training indices are shuffled, cut into pools of ``bucket_pools`` batches,
sorted by source length inside each pool, batched, and the batches shuffled again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from datamodules.base import resume_position
from datamodules.download import download_file
from litlab.errors import ConfigError, DataError, DataNotFoundError

log = logging.getLogger(__name__)

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")

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


_PUNCT = re.compile(r"([.!?])")
_NON_LETTERS = re.compile(r"[^a-zA-Z.!?]+")
_NON_LETTERS_NO_PERIOD = re.compile(r"[^a-zA-Z!?]+")


def unicode_to_ascii(text: str) -> str:
    """Drop combining marks after NFD decomposition: ``"Ça été"`` -> ``"Ca ete"``."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def normalize(text: str, keep_period: bool = True) -> str:
    """The tutorial's ``normalizeString``: ASCII, lower-case, ``.!?`` split off, other non-letters
    (apostrophes, commas, digits, exotic spaces) collapsed to single spaces, ends stripped.

    ``keep_period=False`` applies the tutorial's current rule, which also drops ``.``.
    """
    text = unicode_to_ascii(text.lower().strip())
    text = _PUNCT.sub(r" \1", text)
    return (_NON_LETTERS if keep_period else _NON_LETTERS_NO_PERIOD).sub(" ", text).strip()


@dataclass
class ParseStats:
    """What happened to each input line."""

    lines: int = 0
    malformed: int = 0  # not exactly two tab-separated fields: skipped
    filtered: int = 0  # too long, wrong English prefix, or an empty side
    kept: int = 0


def parse_pairs(
    lines: Iterable[str],
    max_length: int = 10,
    prefixes: Sequence[str] = ENG_PREFIXES,
    keep_period: bool = True,
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


def build_vocab(sentences: Iterable[str], min_freq: int = 1) -> list[str]:
    """Specials, then the words seen at least ``min_freq`` times, most frequent first (ties A-Z)."""
    counts = Counter(word for sentence in sentences for word in sentence.split())
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *words]


def encode(words: Sequence[str], index: dict[str, int], append_eos: bool) -> list[int]:
    """Word ids (unknown words -> ``<unk>``), with ``<eos>`` appended when asked."""
    ids = [index.get(word, UNK) for word in words]
    return [*ids, EOS] if append_eos else ids


def decode(ids: Iterable[int], vocab: Sequence[str]) -> list[str]:
    """Ids -> words, stopping at ``<eos>`` and dropping ``<pad>`` / ``<sos>``."""
    words = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i not in (PAD, SOS):
            words.append(vocab[i])
    return words


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


class BucketBatchSampler(BatchSampler):
    """Batches of similar source length, sharded across data-parallel ranks.

    ``shuffle=True``: a fresh permutation every epoch (seeded by ``seed`` and the epoch count), cut
    into pools of ``pool_batches * batch_size`` indices, each pool sorted by length and cut into
    batches, then the batch order shuffled. ``pool_batches=1`` gives plain random batches.
    ``shuffle=False``: indices sorted by length (stable), in order (evaluation).
    ``epoch`` counts the passes (the first is given when the loader is built, e.g. on resuming)
    and ``start`` skips that many batches of the next pass only (a run resumed mid-epoch).

    Data-parallel (DDP): Lightning cannot shard a custom batch sampler's output, so it re-creates
    this one with a ``DistributedSampler`` as ``sampler``; only that sampler's ``rank`` and
    ``num_replicas`` are read. Every rank draws the same permutation (same seed, same epoch), pads
    it to a multiple of the world size by repeating its first indices (as ``DistributedSampler``
    does) and keeps every ``num_replicas``-th index from ``rank``: the shards are disjoint, cover the
    whole split, change every epoch and have equal sizes, so every rank runs the same number of
    batches (DDP needs that). Without a sampler (one process) nothing is sharded.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        pool_batches: int = 50,
        seed: int | None = 0,
        sampler: Sampler[int] | None = None,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last=False)  # type: ignore[arg-type]
        self.lengths = list(lengths)
        self.shuffle = shuffle
        self.pool_batches = max(1, pool_batches)
        self.seed = seed
        self.epoch = 0
        self.start = 0
        self.rank = int(getattr(sampler, "rank", 0))
        self.num_replicas = int(getattr(sampler, "num_replicas", 1))

    def __len__(self) -> int:
        # pools hold whole batches, so a shard of m indices always gives ceil(m / batch_size)
        return (self._shard_size() + self.batch_size - 1) // self.batch_size

    def _shard_size(self) -> int:
        return (len(self.lengths) + self.num_replicas - 1) // self.num_replicas

    def _shard(self, order: list[int]) -> list[int]:
        """This rank's share of ``order``: padded to a multiple of the world size, strided."""
        if self.num_replicas == 1:
            return order
        total = self._shard_size() * self.num_replicas
        padded = order + order[: total - len(order)]
        return padded[self.rank :: self.num_replicas]

    def _by_length(self, indices: list[int]) -> list[int]:
        return sorted(indices, key=lambda i: self.lengths[i])

    def __iter__(self) -> Iterator[list[int]]:
        n, size = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = self._by_length(self._shard(list(range(n))))
            yield from (order[i : i + size] for i in range(0, len(order), size))
            return
        generator = torch.Generator()
        if self.seed is not None:
            generator.manual_seed(self.seed + self.epoch)
        elif self.num_replicas > 1:  # ranks must agree on the permutation: seed by epoch only
            generator.manual_seed(self.epoch)
        else:
            generator.seed()
        self.epoch += 1
        order = self._shard(torch.randperm(n, generator=generator).tolist())
        pool = size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = self._by_length(chunk) if self.pool_batches > 1 else chunk
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        start, self.start = self.start, 0
        for b in torch.randperm(len(batches), generator=generator).tolist()[start:]:
            yield batches[b]


def pad(
    sequences: Sequence[Sequence[int]], min_length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with ``<pad>`` to the longest (or ``min_length``): ids ``(B, T)``, mask ``(B, T)``."""
    length = max(min_length, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), length), PAD, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, ids != PAD


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


def read_lines(path: Path) -> tuple[list[str], str]:
    """The lines of ``eng-fra.txt`` or ``eng-fra.txt.gz`` (UTF-8) and the text's sha256."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); delete it and download again") from err
    return raw.decode("utf-8", errors="replace").split("\n"), hashlib.sha256(raw).hexdigest()


class EngFraDataModule(L.LightningDataModule):
    """French -> English pairs of the tutorial, split 90/5/5, bucketed padded batches.

    Args:
        data_dir: folder holding ``eng-fra/eng-fra.txt.gz`` (or ``eng-fra.txt``).
        max_length: both sides must have fewer words than this (the tutorial's ``MAX_LENGTH``).
        keep_period: the tutorial's older rule (keeps ``.``) or its current one (module docstring).
        append_eos: append ``<eos>`` to source and target (report Q12).
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
        batch_size: int = 64,
        eval_batch_size: int = 256,
        max_length: int = 10,
        keep_period: bool = True,
        append_eos: bool = True,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 0,
        shuffle_seed: int | None = 0,
        min_freq: int = 1,
        bucket: bool = True,
        bucket_pools: int = 50,
        pad_to: int = 0,
        download: bool = True,
        archives: Sequence[str] = ENG_FRA_ARCHIVES,
        archive_member: str = ENG_FRA_MEMBER,
        sha256: str | None = ENG_FRA_SHA256,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                "positive and sum to less than 1"
            )
        self.save_hyperparameters()
        self.folder = Path(data_dir) / "eng-fra"
        self.pairs: list[tuple[str, str]] = []
        self.stats = ParseStats()
        self.split_indices: dict[str, list[int]] = {}
        self.src_vocab: list[str] = []
        self.tgt_vocab: list[str] = []
        self.datasets: dict[str, PairDataset] = {}

    # -- files ---------------------------------------------------------------------------------
    def data_file(self) -> Path | None:
        for name in ENG_FRA_FILES:
            if (self.folder / name).is_file():
                return self.folder / name
        return None

    def prepare_data(self) -> None:
        """Download the tutorial archive (rank 0 only) when no ``eng-fra.txt[.gz]`` is found."""
        if self.data_file() is not None:
            return
        errors: list[str] = []
        if self.hparams.download:
            for url in self.hparams.archives:
                try:
                    self._download(url)
                    return
                except (OSError, zipfile.BadZipFile, KeyError, DataError) as err:
                    errors.append(f"{url}: {getattr(err, 'reason', err)}")
        how = (
            f"download failed ({'; '.join(errors[-3:])})"
            if self.hparams.download
            else "download is disabled (data.download=false)"
        )
        raise DataNotFoundError(
            f"eng-fra files not found in {self.folder} (looked for {', '.join(ENG_FRA_FILES)}); "
            f"{how}. Set DATA_DIR or paths.data_dir to a folder holding eng-fra/, "
            "or run online to download."
        )

    def _download(self, url: str) -> None:
        """Fetch the zip, check the member's sha256, store it as ``eng-fra.txt.gz``."""
        archive = self.folder / ".data.zip"
        download_file(url, archive, None)
        try:
            with zipfile.ZipFile(archive) as zf:
                raw = zf.read(self.hparams.archive_member)
        finally:
            archive.unlink(missing_ok=True)
        self._check(hashlib.sha256(raw).hexdigest(), url)
        tmp = self.folder / ".eng-fra.txt.gz.part"
        with gzip.GzipFile(tmp, "wb", mtime=0) as out:
            out.write(raw)
        tmp.replace(self.folder / ENG_FRA_FILES[0])

    def _check(self, digest: str, where: object) -> None:
        expected = self.hparams.sha256
        if expected is not None and digest != expected:
            raise DataError(
                f"{where}: sha256 of the text is {digest}, expected {expected}; the file is not "
                "the tutorial's eng-fra.txt (delete it and download again, or set data.sha256=null)"
            )

    # -- pairs, splits, vocabularies -----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        path = self.data_file()
        if path is None:
            self.prepare_data()
            path = self.data_file()
        lines, digest = read_lines(path)
        self._check(digest, path)
        self.pairs, self.stats = parse_pairs(lines, hp.max_length, ENG_PREFIXES, hp.keep_period)
        log.info(
            "eng-fra: %d lines, %d malformed (skipped), %d pairs kept (keep_period=%s)",
            self.stats.lines, self.stats.malformed, self.stats.kept, hp.keep_period,
        )  # fmt: skip
        if not self.pairs:
            raise DataError(
                f"{path}: no usable sentence pair in {self.stats.lines} lines "
                f"({self.stats.malformed} malformed: not 'English<TAB>French'; the rest filtered "
                f"out by max_length={hp.max_length} and the English prefixes)"
            )
        self.split_indices = split_indices(len(self.pairs), hp.val_fraction, hp.test_fraction,
                                           hp.split_seed)  # fmt: skip
        train = [self.pairs[i] for i in self.split_indices["train"]]
        self.src_vocab = build_vocab((fr for fr, _ in train), hp.min_freq)
        self.tgt_vocab = build_vocab((en for _, en in train), hp.min_freq)
        src_index = {w: i for i, w in enumerate(self.src_vocab)}
        tgt_index = {w: i for i, w in enumerate(self.tgt_vocab)}
        for split, indices in self.split_indices.items():
            examples = []
            for i in indices:
                fr, en = self.pairs[i]
                examples.append(
                    Example(encode(fr.split(), src_index, hp.append_eos),
                            encode(en.split(), tgt_index, hp.append_eos), fr, en)
                )  # fmt: skip
            self.datasets[split] = PairDataset(examples)

    def model_kwargs(self) -> dict:
        """Vocabularies (plain lists) and the text rules a checkpoint needs to translate."""
        return {
            "src_vocab": list(self.src_vocab),
            "tgt_vocab": list(self.tgt_vocab),
            "preprocessing": {
                "append_eos": bool(self.hparams.append_eos),
                "keep_period": bool(self.hparams.keep_period),
                "max_length": int(self.hparams.max_length),
            },
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
            sampler.epoch, sampler.start = resume_position(self.trainer)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=Collate(hp.pad_to),
                          num_workers=hp.num_workers,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip

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
