"""The real download path, against an HTTP server on 127.0.0.1 serving the MNIST files; two
processes preparing the same data at once; the gzip-or-plain reader's errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import multiprocessing
import shutil
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datamodules.eng_fra import EngFraDataModule
from datamodules.files import find_file, read_bytes, read_text, sha256sum
from datamodules.mnist import MNIST_FILES, MNISTDataModule
from litlab.errors import DataError, DataNotFoundError


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


# -- concurrent prepare_data (every DDP rank runs train.py, which prepares the data) -----------


def slow_logged_urlopen(log: Path) -> Callable:
    """``urllib.request.urlopen`` that appends each URL it opens to ``log`` and takes 0.3 s
    first, so that a second process arrives while the first is still downloading."""
    real = urllib.request.urlopen

    def urlopen(url, *args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{url}\n")
        time.sleep(0.3)
        return real(url, *args, **kwargs)

    return urlopen


def prepare_in_two_processes(make_dm: Callable[[], object], log: Path, monkeypatch) -> list[str]:
    """Run ``make_dm().prepare_data()`` in two processes started together (as torchrun starts
    ranks); return the URLs they opened. Fails if either process fails."""
    monkeypatch.setattr(urllib.request, "urlopen", slow_logged_urlopen(log))
    context = multiprocessing.get_context("fork")  # the patched urlopen travels with the fork
    start = context.Barrier(2)

    def rank() -> None:
        start.wait()
        make_dm().prepare_data()

    processes = [context.Process(target=rank) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    return log.read_text().split() if log.exists() else []


def test_two_processes_download_mnist_once(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in MNIST_FILES:
        shutil.copy(data_dir / "MNIST" / "raw" / name, mirror / name)
    target = tmp_path / "data"
    opened = prepare_in_two_processes(
        lambda: MNISTDataModule(data_dir=str(target), mirrors=[mirror.as_uri() + "/"]),
        tmp_path / "opened.log",
        monkeypatch,
    )
    assert sorted(opened) == sorted(f"{mirror.as_uri()}/{name}" for name in MNIST_FILES)
    raw = target / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST_FILES)  # no .part, no lock
    assert all(sha256sum(raw / name) == sha for name, sha in MNIST_FILES.items())


def test_two_processes_download_eng_fra_once(tmp_path: Path, monkeypatch) -> None:
    text = "\n".join(f"I'm number {i}.\tJe suis numero {i}." for i in range(40)).encode()
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/eng-fra.txt", text)
    root = tmp_path / "root"
    digest = hashlib.sha256(text).hexdigest()
    opened = prepare_in_two_processes(
        lambda: EngFraDataModule(str(root), archives=[archive.as_uri()], sha256=digest),
        tmp_path / "opened.log",
        monkeypatch,
    )
    assert opened == [archive.as_uri()]
    folder = root / "eng-fra"
    assert [p.name for p in folder.iterdir()] == ["eng-fra.txt.gz"]
    assert gzip.decompress((folder / "eng-fra.txt.gz").read_bytes()) == text


# -- finding and reading -----------------------------------------------------------------------


def test_find_file_takes_the_first_name_that_exists(tmp_path: Path) -> None:
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"x"))
    assert find_file(tmp_path, "a.txt", "a.txt.gz") == tmp_path / "a.txt.gz"
    (tmp_path / "a.txt").write_text("x")
    assert find_file(tmp_path, "a.txt", "a.txt.gz") == tmp_path / "a.txt"
    assert find_file(tmp_path, "b.txt") is None


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    text = "".join(f"line {i} of some text\n" for i in range(2000)).encode()
    packed = gzip.compress(text)
    (tmp_path / "good.txt.gz").write_bytes(packed)
    assert read_bytes(tmp_path / "good.txt.gz") == text
    damaged = bytearray(packed)
    damaged[len(packed) // 2 : len(packed) // 2 + 50] = bytes(50)  # corrupt deflate: zlib.error
    (tmp_path / "damaged.txt.gz").write_bytes(bytes(damaged))
    (tmp_path / "truncated.txt.gz").write_bytes(packed[: len(packed) // 2])  # EOFError
    (tmp_path / "notgzip.txt.gz").write_bytes(b"plain text")  # OSError (BadGzipFile)
    for name in ("damaged", "truncated", "notgzip"):
        with pytest.raises(DataError, match=rf"{name}\.txt\.gz: cannot decompress"):
            read_bytes(tmp_path / f"{name}.txt.gz")
    with pytest.raises(DataError, match=r"missing\.txt: cannot read"):
        read_bytes(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    assert read_text(tmp_path / "latin1.txt", errors="replace") == "caf\ufffd\n"
    with pytest.raises(DataError, match=r"good\.txt\.gz: sha256 of its content is"):
        read_text(tmp_path / "good.txt.gz", sha256="0" * 64)
