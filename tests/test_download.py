"""The real download path, against an HTTP server on 127.0.0.1 serving the MNIST files."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamodules.download import DataError, DataNotFoundError
from datamodules.mnist import MNIST_FILES, MNISTDataModule


@pytest.fixture
def served(tmp_path: Path, data_dir: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) — a copy of the four original MNIST files."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in MNIST_FILES:
        shutil.copy(data_dir / "MNIST" / "raw" / name, folder / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()
    server.server_close()


def test_download_verifies_and_loads(served, tmp_path: Path) -> None:
    url, _ = served
    target = tmp_path / "data"
    dm = MNISTDataModule(data_dir=str(target), mirrors=["http://127.0.0.1:9/", url])
    dm.prepare_data()  # the first mirror refuses the connection; the second serves
    assert sorted(p.name for p in (target / "MNIST" / "raw").iterdir()) == sorted(MNIST_FILES)
    dm.setup()
    assert len(dm.splits["test"]) == 10000


def test_corrupted_download_is_rejected(served, tmp_path: Path) -> None:
    url, folder = served
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(labels.read_bytes())
    data[100] ^= 0xFF
    labels.write_bytes(bytes(data))
    target = tmp_path / "data"
    dm = MNISTDataModule(data_dir=str(target), mirrors=[url])
    with pytest.raises(DataError, match=r"checksum mismatch for .*t10k-labels-idx1-ubyte.gz"):
        dm.prepare_data()
    raw = target / "MNIST" / "raw"
    assert not (raw / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in raw.iterdir() if p.name.endswith(".part")]  # nothing half-written


def test_offline_error_is_actionable(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path / "data"), mirrors=["http://127.0.0.1:9/"])
    with pytest.raises(DataNotFoundError, match=r"download failed .*DATA_DIR"):
        dm.prepare_data()
