"""eng-fra preprocessing, filtering, splits, vocabularies and bucketed batches (real file + toys)."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from datamodules.eng_fra import EngFraDataModule, parse_pairs, split_indices
from datamodules.samplers import BucketBatchSampler
from litlab.errors import DataError, DataNotFoundError
from litlab.text import EOS, PAD, SPECIALS, UNK, TextRules, Vocab, normalize

REAL_PAIRS_OLD_RULE = 10_599  # keep_period=true (the tutorial's older rule; our default)
REAL_PAIRS_CURRENT_RULE = 11_445  # keep_period=false (the tutorial's current rule)


@pytest.fixture(scope="module")
def real_dm(data_dir: Path) -> EngFraDataModule:
    dm = EngFraDataModule(str(data_dir), download=False, batch_size=32)
    dm.setup()
    return dm


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ça été très agréable.", "ca ete tres agreable ."),
        ("I'm OK!", "i m ok !"),
        ("He's   tired, isn't he?", "he s tired isn t he ?"),
        ("Je suis plus grand que mes amis.", "je suis plus grand que mes amis ."),
        ("Où êtes-vous\u202f?", "ou etes vous ?"),  # narrow no-break space, as in the real file
        ("  «Élève» 42 ", "eleve"),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_current_rule_drops_periods() -> None:
    assert (
        normalize("I'm taller than my friends.", keep_period=False) == "i m taller than my friends"
    )
    assert normalize("Are you sure?!", keep_period=False) == "are you sure ? !"


def test_parse_pairs_filters_and_counts_bad_lines() -> None:
    lines = [
        "I'm taller than my friends.\tJe suis plus grand que mes amis.",  # kept
        "He's afraid of dying.\tIl a peur de mourir.\n",  # kept (newline stripped)
        "They're here.\tIls sont ici.\r\n",  # kept (CRLF)
        "Go.\tVa !",  # wrong prefix
        "I am a very very very very very long sentence here.\tJe suis long.",  # 11 words
        "I'm here.",  # missing tab
        "I'm here.\tJe suis ici.\tCC-BY attribution",  # extra field
        "",  # blank: ignored
        "I'm \u00e9l\u00e8ve.\t???",  # French side becomes "? ? ?", still letters-free but kept
        "I'm fine.\t42",  # French side empty after normalising
    ]
    pairs, stats = parse_pairs(lines)
    assert pairs[:3] == [
        ("je suis plus grand que mes amis .", "i m taller than my friends ."),
        ("il a peur de mourir .", "he s afraid of dying ."),
        ("ils sont ici .", "they re here ."),
    ]
    assert stats.lines == 9
    assert stats.malformed == 2
    assert stats.kept == len(pairs) == 4
    assert stats.filtered == 3


def test_real_file_pair_counts(real_dm: EngFraDataModule, data_dir: Path) -> None:
    assert real_dm.stats.lines == 135_842
    assert real_dm.stats.malformed == 0
    assert len(real_dm.pairs) == REAL_PAIRS_OLD_RULE
    assert ("il a peur de mourir .", "he is afraid that he will die .") in real_dm.pairs
    with gzip.open(data_dir / "eng-fra" / "eng-fra.txt.gz", "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    _, stats = parse_pairs(lines, keep_period=False)
    assert stats.kept == REAL_PAIRS_CURRENT_RULE


def test_splits_disjoint_sized_and_seeded(real_dm: EngFraDataModule) -> None:
    split = real_dm.split_indices
    sets = {name: set(idx) for name, idx in split.items()}
    assert sum(len(s) for s in sets.values()) == len(real_dm.pairs)
    assert not (
        sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"]
    )
    assert len(split["val"]) == len(split["test"]) == round(0.05 * len(real_dm.pairs))
    assert split_indices(len(real_dm.pairs), 0.05, 0.05, 0) == split
    assert split_indices(len(real_dm.pairs), 0.05, 0.05, 1)["test"] != split["test"]


def test_vocab_from_training_split(real_dm: EngFraDataModule) -> None:
    assert real_dm.src_vocab[:4] == list(SPECIALS) == real_dm.tgt_vocab[:4]
    train_words = {w for i in real_dm.split_indices["train"] for w in real_dm.pairs[i][1].split()}
    assert set(real_dm.tgt_vocab[4:]) == train_words
    test_only = [
        w
        for i in real_dm.split_indices["test"]
        for w in real_dm.pairs[i][1].split()
        if w not in train_words
    ]
    assert test_only, "some test words are unseen in training"
    ids = [t for e in real_dm.datasets["test"].examples for t in e.tgt]
    assert UNK in ids
    kwargs = real_dm.model_kwargs()
    assert kwargs["tgt_vocab"] == real_dm.tgt_vocab and isinstance(kwargs["tgt_vocab"], list)
    assert kwargs["preprocessing"] == {"append_eos": True, "keep_period": True, "max_length": 10}


def test_vocab_min_freq() -> None:
    vocab = Vocab.by_frequency(["a b b", "b c"], min_freq=2)
    assert vocab.words == [*SPECIALS, "b"]


def test_batches_padded_masked_bucketed(real_dm: EngFraDataModule) -> None:
    spreads, random_spreads = [], []
    for i, batch in enumerate(real_dm.train_dataloader()):
        src, mask = batch["src"], batch["src_mask"]
        assert torch.equal(mask, src != PAD) and torch.equal(batch["tgt_mask"], batch["tgt"] != PAD)
        lengths = mask.sum(1)
        last = batch["tgt"][torch.arange(len(lengths)), batch["tgt_mask"].sum(1) - 1]
        assert (last == EOS).all()
        assert (src[torch.arange(len(lengths)), lengths - 1] == EOS).all()
        assert src.shape[1] == lengths.max()
        spreads.append(int(lengths.max() - lengths.min()))
        if i == 20:
            break
    sampler = BucketBatchSampler(real_dm.datasets["train"].lengths, 32, True, pool_batches=1)
    lengths = real_dm.datasets["train"].lengths
    for i, batch in enumerate(sampler):
        random_spreads.append(max(lengths[j] for j in batch) - min(lengths[j] for j in batch))
        if i == 20:
            break
    assert sum(spreads) < sum(random_spreads) / 3
    # evaluation batches: every example exactly once, sorted by length
    seen = [i for b in BucketBatchSampler(lengths, 100, shuffle=False) for i in b]
    assert sorted(seen) == list(range(len(lengths)))


def test_sampler_epochs_differ_and_are_seeded() -> None:
    lengths = [3, 5, 4, 6, 7, 5, 3, 8] * 10
    a = BucketBatchSampler(lengths, 8, True, pool_batches=2, seed=3)
    b = BucketBatchSampler(lengths, 8, True, pool_batches=2, seed=3)
    first, second = list(a), list(a)
    assert first == list(b) and first != second
    assert sorted(i for batch in first for i in batch) == list(range(len(lengths)))


def write_text_file(folder: Path, lines: list[str]) -> str:
    text = "\n".join(lines).encode("utf-8")
    (folder / "eng-fra").mkdir(parents=True)
    (folder / "eng-fra" / "eng-fra.txt").write_bytes(text)
    return hashlib.sha256(text).hexdigest()


TOY = [
    f"I'm number {w}.\tJe suis numero {w}."
    for w in ["one", "two", "three", "four", "five", "six", "seven"]
]
TOY += [
    f"He is {w}.\tIl est {w}."
    for w in ["happy", "sad", "tall", "small", "big", "old", "young", "rich"]
]
TOY += ["broken line without a tab", "I'm a.\tJe.\tExtra"]


def test_append_eos_false_and_toy_file(tmp_path: Path) -> None:
    digest = write_text_file(tmp_path, TOY)
    dm = EngFraDataModule(str(tmp_path), append_eos=False, sha256=digest, download=False,
                          val_fraction=0.2, test_fraction=0.2, batch_size=4)  # fmt: skip
    dm.setup()
    assert dm.stats.malformed == 2 and dm.stats.kept == 15
    batch = next(iter(dm.train_dataloader()))
    assert not (batch["src"] == EOS).any() and not (batch["tgt"] == EOS).any()
    assert dm.model_kwargs()["preprocessing"]["append_eos"] is False


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    write_text_file(tmp_path, TOY)
    dm = EngFraDataModule(str(tmp_path), download=False)  # expects the real file's sha256
    with pytest.raises(DataError, match="sha256"):
        dm.setup()


def test_missing_file_names_folder_and_fix(tmp_path: Path) -> None:
    dm = EngFraDataModule(str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(tmp_path / "eng-fra") in message and "eng-fra.txt.gz" in message
    assert "DATA_DIR" in message


def test_download_from_archive_verifies_member(tmp_path: Path) -> None:
    text = "\n".join(TOY).encode("utf-8")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/eng-fra.txt", text)
    root = tmp_path / "root"
    digest = hashlib.sha256(text).hexdigest()
    dm = EngFraDataModule(str(root), archives=[archive.as_uri()], sha256=digest,
                          val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    dm.prepare_data()
    assert (root / "eng-fra" / "eng-fra.txt.gz").is_file()
    dm.setup()
    assert dm.stats.kept == 15
    bad = EngFraDataModule(str(tmp_path / "other"), archives=[archive.as_uri()], sha256="0" * 64)
    with pytest.raises(DataError, match="sha256"):  # a wrong file is refused, as every data set's
        bad.prepare_data()
    assert not (tmp_path / "other" / "eng-fra" / "eng-fra.txt.gz").exists()
    assert not list((tmp_path / "other" / "eng-fra").iterdir())  # no temporary file left


def test_download_of_a_non_zip_is_a_clear_error(tmp_path: Path) -> None:
    page = tmp_path / "data.zip"
    page.write_text("<html>moved</html>")  # what a proxy or a moved URL serves
    dm = EngFraDataModule(str(tmp_path / "root"), archives=[page.as_uri()])
    with pytest.raises(DataError, match=r"data\.zip: not a zip archive holding data/eng-fra\.txt"):
        dm.prepare_data()
    assert not list((tmp_path / "root" / "eng-fra").iterdir())


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    """A damaged deflate stream (zlib.error) or a truncated one (EOFError): one line naming it."""
    good = (data_dir / "eng-fra" / "eng-fra.txt.gz").read_bytes()
    damaged = bytearray(good[:20_000])
    damaged[5_000:5_100] = bytes(100)
    for name, data in [("damaged", bytes(damaged)), ("truncated", good[:20_000])]:
        (tmp_path / name / "eng-fra").mkdir(parents=True)
        (tmp_path / name / "eng-fra" / "eng-fra.txt.gz").write_bytes(data)
        dm = EngFraDataModule(str(tmp_path / name), download=False)
        with pytest.raises(DataError, match=r"eng-fra\.txt\.gz: cannot decompress"):
            dm.setup()


def test_text_rules_defaults_are_the_config_defaults(make_cfg) -> None:
    """The preprocessing defaults live in TextRules; the data module and its yaml agree with it."""
    defaults = asdict(TextRules())
    cfg = make_cfg("data=eng_fra")
    assert {k: cfg.data[k] for k in defaults} == defaults
    dm = EngFraDataModule()
    assert {k: dm.hparams[k] for k in defaults} == defaults
