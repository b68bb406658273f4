"""MNISTDataModule on the real IDX files: shapes, labels, splits, binarisation, errors."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from datamodules.mnist import MNIST_FILES, MNISTDataModule, read_idx
from litlab.errors import DataError, DataNotFoundError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def make_dm(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), download=False, **kwargs)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def dm(data_dir: Path) -> MNISTDataModule:
    return make_dm(data_dir)


def batch_through(dm: MNISTDataModule, split: str, training: bool, n: int = 256) -> torch.Tensor:
    """What the model sees: a batch of ``split`` after ``on_after_batch_transfer``."""
    dm.trainer = SimpleNamespace(training=training)
    try:
        x, _ = dm.on_after_batch_transfer(dm.splits[split].__getitems__(list(range(n))), 0)
    finally:
        dm.trainer = None
    return x


def test_shapes_labels_and_split_sizes(dm: MNISTDataModule) -> None:
    sizes = {name: len(split) for name, split in dm.splits.items()}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    images, labels = dm.splits["train"].tensors
    assert images.shape == (55000, 28, 28) and images.dtype == torch.uint8
    train_val = torch.cat([dm.splits["train"].tensors[1], dm.splits["val"].tensors[1]])
    assert torch.bincount(train_val).tolist() == TRAIN_COUNTS
    assert torch.bincount(dm.splits["test"].tensors[1]).tolist() == TEST_COUNTS


def test_splits_are_disjoint_and_seeded(dm: MNISTDataModule, data_dir: Path) -> None:
    train_idx, val_idx = dm.split_indices["train"], dm.split_indices["val"]
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 60000
    again = make_dm(data_dir)
    assert torch.equal(again.split_indices["val"], val_idx)
    other = make_dm(data_dir, split_seed=1)
    assert not torch.equal(other.split_indices["val"], val_idx)


def test_dataloader_yields_index_slices(dm: MNISTDataModule) -> None:
    loader = dm.train_dataloader()
    images, labels = next(iter(loader))
    assert images.shape == (128, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (128,)


def test_dynamic_binarisation(dm: MNISTDataModule) -> None:
    first, second = batch_through(dm, "train", True), batch_through(dm, "train", True)
    assert first.shape == (256, 1, 28, 28)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)  # resampled every time
    val = batch_through(dm, "val", False)
    assert set(val.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(val, batch_through(dm, "val", False))  # fixed once, with a seed


def test_static_and_grey_modes(data_dir: Path) -> None:
    static = make_dm(data_dir, binarize="static")
    x = batch_through(static, "train", True)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x, batch_through(static, "train", True))
    grey = make_dm(data_dir, binarize="none")
    x = batch_through(grey, "train", True)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.unique().numel() > 100  # grey levels kept
    pixels = grey.splits["train"].tensors[0].float() / 255
    assert abs(pixels.mean().item() - 0.1307) < 0.002  # the usual MNIST mean


def test_unknown_binarize_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"data.binarize='grey'.*dynamic, static, none"):
        MNISTDataModule(binarize="grey")


def test_missing_folder_gives_actionable_error(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "DATA_DIR" in message


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(struct.pack(f">{1 + len(dims)}i", magic, *dims) + payload)


def test_idx_errors_name_the_file(tmp_path: Path, data_dir: Path) -> None:
    bad_magic = tmp_path / "bad-magic.gz"
    write_idx(bad_magic, 1234, (2, 28, 28), bytes(2 * 784))
    with pytest.raises(DataError, match=r"bad-magic.gz: IDX magic number 1234, expected 2051"):
        read_idx(bad_magic, 2051, (28, 28))
    bad_shape = tmp_path / "bad-shape.gz"
    write_idx(bad_shape, 2051, (2, 27, 28), bytes(2 * 27 * 28))
    with pytest.raises(DataError, match=r"bad-shape.gz: IDX shape"):
        read_idx(bad_shape, 2051, (28, 28))
    short = tmp_path / "short.gz"
    write_idx(short, 2051, (3, 28, 28), bytes(2 * 784))
    with pytest.raises(DataError, match=r"short.gz: .* bytes after decompression"):
        read_idx(short, 2051, (28, 28))
    truncated = tmp_path / "truncated.gz"
    source = data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    truncated.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"truncated.gz: cannot decompress"):
        read_idx(truncated, 2049, ())


def test_one_missing_file_is_named(tmp_path: Path, data_dir: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in list(MNIST_FILES)[1:]:
        shutil.copy(data_dir / "MNIST" / "raw" / name, raw / name)
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataNotFoundError, match=r"looked for train-images-idx3-ubyte.gz\)"):
        dm.prepare_data()
