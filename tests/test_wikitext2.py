"""WikiText-2 data module on the real files: vocabulary, streams, windows, file handling."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from datamodules.wikitext2 import (
    WIKITEXT2_FILES,
    WikiText2DataModule,
    sliding_windows,
    tokenize,
    windows,
)
from litlab.errors import ConfigError, DataError, DataNotFoundError
from litlab.text import EOS_TOKEN as EOS
from litlab.text import IGNORE_INDEX
from litlab.text import UNK_TOKEN as UNK

# shared/data/PROVENANCE.md: tokens counting one <eos> per line
TOKENS = {"train": 2_088_628, "val": 217_646, "test": 245_569}


@pytest.fixture(scope="module")
def wikitext(data_dir: Path) -> WikiText2DataModule:
    dm = WikiText2DataModule(data_dir=str(data_dir), batch_size=4, eval_batch_size=3, bptt=35)
    dm.prepare_data()
    dm.setup()
    return dm


def plain_copy(data_dir: Path, dest: Path) -> Path:
    """The three split files, decompressed, in ``dest/wikitext-2`` (a writable data folder)."""
    folder = dest / "wikitext-2"
    folder.mkdir(parents=True)
    src = data_dir / "wikitext-2"
    for name in WIKITEXT2_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, folder / name)
        else:
            with gzip.open(src / f"{name}.gz", "rb") as handle:
                (folder / name).write_bytes(handle.read())
    return folder


def test_vocabulary_and_streams(wikitext: WikiText2DataModule) -> None:
    assert wikitext.vocab_size == 33_278
    assert wikitext.model_kwargs() == {"vocab_size": 33_278}
    assert len(set(wikitext.vocab)) == len(wikitext.vocab)
    assert EOS in wikitext.vocab and UNK in wikitext.vocab
    for split, count in TOKENS.items():
        stream = wikitext.streams[split]
        assert stream.dtype == torch.int64 and len(stream) == count, split
        assert int(stream.min()) >= 0 and int(stream.max()) < wikitext.vocab_size
    # train line 1 is empty, line 2 is " = Valkyria Chronicles III = "
    words = [wikitext.vocab[i] for i in wikitext.streams["train"][:7].tolist()]
    assert words == [EOS, "=", "Valkyria", "Chronicles", "III", "=", EOS]
    eos = wikitext.vocab.index(EOS)
    assert int((wikitext.streams["train"] == eos).sum()) == 36_718  # one per line


def test_tokenize_matches_pytorch_examples() -> None:
    text = " = A b = \n\n c  d\n"
    expected = [w for line in text.split("\n")[:-1] for w in [*line.split(), EOS]]
    assert tokenize(text) == expected
    assert tokenize("x y") == ["x", "y", EOS]  # last line without newline still ends with <eos>


def test_windows_are_contiguous_and_shifted(wikitext: WikiText2DataModule) -> None:
    stream = torch.arange(100)
    w = windows(stream, bptt=7)
    assert w.shape == ((100 - 1) // 7, 8)
    assert torch.equal(w[:-1, -1], w[1:, 0])  # window k+1 starts where window k ends
    assert torch.equal(w.flatten().unique(), torch.arange(w.numel() - len(w) + 1))
    # real batches: inputs (B, bptt), targets shifted by one, every window from the stream
    batch = next(iter(wikitext.val_dataloader()))
    x, y = wikitext.on_after_batch_transfer(batch, 0)
    assert x.shape == y.shape == (3, 35)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x[0], wikitext.streams["val"][:35])
    assert torch.equal(y[2], wikitext.streams["val"][2 * 35 + 1 : 3 * 35 + 1])
    n_val = (TOKENS["val"] - 1) // 35
    assert len(wikitext.splits["val"]) == n_val
    assert len(wikitext.val_dataloader()) == -(-n_val // 3)


@pytest.mark.parametrize(("bptt", "stride"), [(7, 7), (7, 3), (7, 1), (10, 4)])
def test_sliding_windows_score_each_target_once_with_context(bptt: int, stride: int) -> None:
    """The same targets as non-overlapping windows, each scored once, in order; after the first
    window every scored target sees at least bptt - stride tokens before its input token."""
    stream = torch.arange(100)
    w, first = sliding_windows(stream, bptt, stride)
    plain = windows(stream, bptt)
    assert torch.equal(w[0], plain[0]) and torch.equal(w[-1], plain[-1])
    scored = []  # (target, tokens of context the model sees for it, its input included)
    for window, start in zip(w, first.tolist(), strict=True):
        assert torch.equal(window, torch.arange(window[0], window[0] + bptt + 1))  # contiguous
        scored += [(int(window[j + 1]), j + 1) for j in range(start, bptt)]
    assert [t for t, _ in scored] == plain[:, 1:].flatten().tolist()
    assert min(c for t, c in scored if t > bptt) == bptt - stride + 1
    assert (first == 0).all() == (stride == bptt)


def test_eval_stride_masks_context_targets(data_dir: Path) -> None:
    dm = WikiText2DataModule(data_dir=str(data_dir), eval_batch_size=3, bptt=35, eval_stride=10)
    dm.setup()
    _, y = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert (y[0] != IGNORE_INDEX).all()  # the first window scores all its 35 targets
    assert (y[1, :25] == IGNORE_INDEX).all()  # the next one starts 10 tokens later: 25 seen
    assert torch.equal(y[1, 25:], dm.streams["val"][36:46])
    scored = sum(
        int((dm.on_after_batch_transfer(b, 0)[1] != IGNORE_INDEX).sum())
        for b in dm.test_dataloader()
    )
    assert scored == 35 * ((TOKENS["test"] - 1) // 35)  # the targets of non-overlapping windows
    for bad in (0, 36):
        with pytest.raises(ConfigError, match=f"data.eval_stride={bad}"):
            WikiText2DataModule(data_dir=str(data_dir), bptt=35, eval_stride=bad)


def test_plain_files_and_gzip_give_the_same_corpus(
    wikitext: WikiText2DataModule, data_dir: Path, tmp_path: Path
) -> None:
    plain_copy(data_dir, tmp_path)
    dm = WikiText2DataModule(data_dir=str(tmp_path), download=False)
    dm.setup()
    assert dm.vocab == wikitext.vocab
    for split in TOKENS:
        assert torch.equal(dm.streams[split], wikitext.streams[split])


def test_download_verifies_checksums(data_dir: Path, tmp_path: Path) -> None:
    """The online path, offline: a file:// mirror serves the files; a bad copy is refused."""
    mirror = plain_copy(data_dir, tmp_path / "mirror")
    target = tmp_path / "data"
    dm = WikiText2DataModule(data_dir=str(target), mirrors=[mirror.as_uri() + "/"])
    dm.prepare_data()
    assert sorted(p.name for p in (target / "wikitext-2").iterdir()) == sorted(WIKITEXT2_FILES)

    (mirror / "valid.txt").write_text("not wikitext\n")
    bad = WikiText2DataModule(data_dir=str(tmp_path / "other"), mirrors=[mirror.as_uri() + "/"])
    with pytest.raises(DataError, match="checksum mismatch"):
        bad.prepare_data()
    assert not (tmp_path / "other" / "wikitext-2" / "valid.txt").exists()


def test_missing_and_corrupt_files_name_the_culprit(data_dir: Path, tmp_path: Path) -> None:
    empty = WikiText2DataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(
        DataNotFoundError, match=r"WikiText-2 files not found in .*wikitext-2.*DATA_DIR"
    ):
        empty.prepare_data()
    folder = plain_copy(data_dir, tmp_path / "corrupt")
    (folder / "test.txt").write_text(" = changed = \n")
    dm = WikiText2DataModule(data_dir=str(tmp_path / "corrupt"), download=False)
    with pytest.raises(DataError, match=r"test\.txt: sha256"):
        dm.setup()
