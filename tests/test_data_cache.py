"""The decoded-data cache (``datamodules.files.cached_tensors``) behind MNIST's fast start-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from datamodules.files import CACHE_ENV, cache_dir, cached_tensors
from datamodules.mnist import MNIST_FILES, MNISTDataModule


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def mnist(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), download=False, **kwargs)
    dm.setup("fit")
    return dm


def same_splits(a: MNISTDataModule, b: MNISTDataModule) -> bool:
    tensors = all(
        torch.equal(x, y)
        for split in ("train", "val", "test")
        for x, y in zip(a.splits[split].tensors, b.splits[split].tensors, strict=True)
    )
    return tensors and all(
        torch.equal(a.split_indices[s], b.split_indices[s]) for s in a.split_indices
    )


def test_mnist_from_the_cache_equals_the_decoded_files(data_dir: Path, cache: Path, monkeypatch):
    first = mnist(data_dir)
    assert len(list((cache / "mnist").glob("*.pt"))) == 1
    second = mnist(data_dir)  # read back (memory-mapped)
    assert same_splits(first, second)
    monkeypatch.setenv(CACHE_ENV, "off")
    decoded = mnist(data_dir)
    assert same_splits(first, decoded)
    assert cache_dir() is None


def test_settings_and_changed_files_get_their_own_entry(data_dir: Path, cache: Path, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "MNIST", copy / "MNIST")
    base = mnist(copy)
    other_split = mnist(copy, split_seed=1)
    assert not torch.equal(base.split_indices["val"], other_split.split_indices["val"])
    assert len(list((cache / "mnist").glob("*.pt"))) == 2
    labels = copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    stat = labels.stat()
    os.utime(
        labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9)
    )  # a file changed: decoded again
    again = mnist(copy)
    assert same_splits(base, again)
    assert len(list((cache / "mnist").glob("*.pt"))) == 3
    assert len(MNIST_FILES) == 4


def test_cache_keeps_the_newest_entries_and_rebuilds_a_damaged_one(cache: Path) -> None:
    built = []

    def build(i: int):
        def _build() -> dict:
            built.append(i)
            return {"x": torch.full((3,), float(i))}

        return _build

    for i in range(5):
        assert cached_tensors("toy", {"i": i}, build(i), keep=3)["x"][0] == i
    assert len(list((cache / "toy").glob("*.pt"))) == 3
    assert cached_tensors("toy", {"i": 4}, build(4), keep=3)["x"][0] == 4
    assert built == [0, 1, 2, 3, 4]  # the last one came from the cache
    for entry in (cache / "toy").glob("*.pt"):
        entry.write_bytes(b"not a checkpoint")
    assert cached_tensors("toy", {"i": 4}, build(4), keep=3)["x"][0] == 4
    assert built[-1] == 4 and len(built) == 6


def test_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    assert cached_tensors("toy", {}, lambda: {"x": torch.ones(2)})["x"].sum() == 2
