"""Finding, reading, downloading and verifying data files: the one place every data module uses.

Every data module resolves its files the same way: look in ``paths.data_dir`` first
(:func:`find_file`: a file may be stored plain or gzip'd); if a file is missing and ``download``
is on, fetch it from each mirror in turn, verify its SHA-256 and move it into place atomically
(:func:`fetch_missing`); otherwise raise :class:`DataNotFoundError` naming the folder, the files
and how to fix it. Files are read by :func:`read_bytes` (gzip or plain; a truncated or corrupt
file is a :class:`DataError` naming it, never a traceback) and :func:`read_text`.

Decoding a data set can cost more than the rest of a run's start-up (MNIST: gunzip 55 MB, split,
binarise the evaluation images), so a data module may keep what it decoded in the cache
(:func:`cached_tensors`, ``$LITLAB_CACHE``, default ``~/.cache/litlab``; ``LITLAB_CACHE=off``
turns it off): one file per data set and settings, keyed by the source files' sizes and
modification times, so a changed file is decoded again.

Concurrent downloads are safe: under DDP every rank runs ``train.py`` (torchrun and SLURM start
them all at once, and ``train.py`` prepares the data before the Trainer exists), so the missing
files are fetched under an exclusive lock on the data folder (:func:`folder_lock`): the first
process downloads, the others wait and then find the files in place. Every download writes its own
uniquely named temporary file and renames it over the destination.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from litlab.errors import DataError, DataNotFoundError

try:  # POSIX; elsewhere downloads are not serialised (one process per data folder, please)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CACHE_ENV",
    "DataError",
    "DataNotFoundError",
    "cache_dir",
    "cached_tensors",
    "check_sha256",
    "download_file",
    "fetch_missing",
    "find_file",
    "folder_lock",
    "mirror_url",
    "read_bytes",
    "read_text",
    "sha256sum",
]

log = logging.getLogger(__name__)

REDOWNLOAD = "delete it and download again"
LOCK_NAME = ".download.lock"
CACHE_ENV = "LITLAB_CACHE"
CACHE_KEEP = 3  # entries kept per data set (the most recently used)


# -- finding and reading -----------------------------------------------------------------------
def find_file(folder: Path, *names: str) -> Path | None:
    """The first of ``folder/name`` for ``names`` that exists (in the order given), else None.

    ``find_file(folder, "train.txt", "train.txt.gz")``: the plain file or its gzip'd twin.
    """
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when its name ends in ``.gz``.

    Raises :class:`DataError` naming the file when it cannot be read or decompressed: an OS error,
    a truncated gzip stream (``EOFError``) or a corrupt deflate stream (``zlib.error``).
    """
    gzipped = path.suffix == ".gz"
    try:
        if gzipped:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        verb = "decompress" if gzipped else "read"
        raise DataError(f"{path}: cannot {verb} ({err}); {REDOWNLOAD}") from err


def check_sha256(
    where: object, digest: str, expected: str | None, remedy: str = REDOWNLOAD
) -> None:
    """Raise :class:`DataError` naming ``where`` when ``digest`` is not ``expected`` (None: any)."""
    if expected is not None and digest != expected:
        raise DataError(
            f"{where}: sha256 of its content is {digest}, expected {expected}; {remedy}"
        )


def read_text(
    path: Path, sha256: str | None = None, remedy: str = REDOWNLOAD, errors: str = "strict"
) -> str:
    """The file's UTF-8 text (:func:`read_bytes`), its content's SHA-256 checked when given.

    An empty file, or (``errors="strict"``) one that is not UTF-8, is a :class:`DataError`;
    ``errors="replace"`` decodes bad bytes to U+FFFD instead. ``remedy`` ends a checksum error.
    """
    raw = read_bytes(path)
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; {REDOWNLOAD}")
    try:
        text = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.start}: {raw[err.start : err.start + 4]!r}); "
            f"{REDOWNLOAD}"
        ) from None
    check_sha256(path, hashlib.sha256(raw).hexdigest(), sha256, remedy)
    return text


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# -- the decoded-data cache ---------------------------------------------------------------------
def cache_dir() -> Path | None:
    """The cache folder: ``$LITLAB_CACHE``, else ``$XDG_CACHE_HOME/litlab`` (``~/.cache/litlab``);
    None when ``LITLAB_CACHE`` is ``off``, ``0`` or empty."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "false", "no") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "litlab"


def file_stamp(*paths: Path) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of each file: what a cache key needs to notice a changed file
    without reading it."""
    stamps = []
    for path in paths:
        stat = path.stat()
        stamps.append((path.name, stat.st_size, stat.st_mtime_ns))
    return stamps


def cached_tensors(
    kind: str, key: object, build: Callable[[], dict], keep: int = CACHE_KEEP
) -> dict:
    """``build()`` (a dict of tensors), decoded once per ``key`` and then read from the cache.

    The entry is ``<cache_dir>/<kind>/<sha256 of key>.pt``, written atomically (a temporary file
    renamed into place, so concurrent processes never see a partial one) and read back memory
    mapped with ``torch.load(weights_only=True, mmap=True)``: no copy until the tensors are used.
    ``key`` (JSON-serialisable) must hold everything the result depends on: the source files'
    :func:`file_stamp` and the settings. An unreadable or unwritable cache is skipped (the data
    is decoded as without one); only the ``keep`` most recently used entries of ``kind`` stay.
    """
    import torch  # the data modules import it anyway; files.py itself does not need it

    root = cache_dir()
    if root is None:
        return build()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    folder = root / kind
    path = folder / f"{digest[:32]}.pt"
    if path.is_file():
        try:
            tensors = torch.load(path, weights_only=True, mmap=True)
            os.utime(path)  # most recently used
            return tensors
        except Exception as err:  # noqa: BLE001  (a damaged entry is rebuilt, never fatal)
            log.warning("ignoring the unreadable cache entry %s (%s)", path, err)
    tensors = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(tensors, handle)
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        entries = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[keep:]:
            old.unlink(missing_ok=True)
    except OSError as err:  # read-only home, full disk: run without the cache
        log.debug("cache not written (%s)", err)
    return tensors


# -- downloading -------------------------------------------------------------------------------
def mirror_url(mirror: str, name: str) -> str:
    """``mirror`` (a folder URL) joined with a file name."""
    return mirror.rstrip("/") + "/" + name


def download_file(url: str, dest: Path, sha256: str | None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``: write a uniquely named temporary file beside it, verify,
    then rename.

    A failed or interrupted download never leaves a partial ``dest`` behind, and two processes
    downloading the same file never write to the same temporary file.
    Raises :class:`DataError` when the checksum does not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                out.write(block)
        if sha256 is not None:
            got = sha256sum(tmp_name)
            if got != sha256:
                raise DataError(
                    f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                    f"the file was discarded (not written to {dest})"
                )
        os.replace(tmp_name, dest)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the existing ``folder`` (``flock`` on ``folder/.download.lock``) while the
    block runs; other processes asking for it wait. Released when the block ends or the process
    dies; the lock file is removed by its holder, and a waiter that locked a removed file retries.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed it while we waited: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


Fetch = Callable[[str, Path, str | None], object]


def fetch_missing(
    folder: Path,
    files: Mapping[str, str | None],
    mirrors: Sequence[str],
    download: bool,
    what: str,
    *,
    names: Callable[[str], Sequence[str]] = lambda name: (name,),
    url: Callable[[str, str], str] = mirror_url,
    fetch: Fetch | None = None,
    root: Path | None = None,
) -> None:
    """Make sure every file of ``files`` (name -> sha256 or None) is in ``folder``.

    A file counts as present when any of ``names(name)`` exists there (default: ``name`` itself).
    Missing files are downloaded, when ``download`` is true, from the first mirror that serves
    them: ``fetch(url(mirror, name), folder / name, sha256)`` (default: :func:`download_file`
    from ``mirror + name``), under :func:`folder_lock`, so that concurrent processes download
    each file once. A mirror that cannot be reached (``OSError``) is skipped; a file that fails
    its checksum is a :class:`DataError`. Raises :class:`DataNotFoundError` naming ``what``, the
    folder and the files looked for when a file is still missing (``root``: the data folder
    that should hold ``folder``, named in the message).
    """

    def missing() -> list[str]:
        return [name for name in files if find_file(folder, *names(name)) is None]

    def error(still: list[str], errors: list[str] | None) -> DataNotFoundError:
        looked_for = [other for name in still for other in names(name)]
        return not_found(what, folder, looked_for, errors, root)

    if not missing():
        return
    if not download:
        raise error(missing(), None)
    fetch = fetch or download_file
    errors: list[str] = []
    fetched: list[str] = []
    with ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(folder_lock(folder))
        except OSError as err:
            raise error(missing(), [f"cannot write to {folder}: {err}"]) from err
        for name in missing():  # again: another process may have fetched them while we waited
            for mirror in mirrors:
                source = url(mirror, name)
                try:
                    fetch(source, folder / name, files[name])
                    fetched.append(name)
                    break
                except OSError as err:  # URLError, TimeoutError, refused connections
                    if isinstance(err, PermissionError):
                        errors.append(f"cannot write to {folder}: {err}")
                        break
                    errors.append(f"{source}: {getattr(err, 'reason', err)}")
        if still := missing():
            raise error(still, errors)
    if fetched:
        log.info("%s: downloaded %s into %s", what, ", ".join(fetched), folder)


def not_found(
    what: str,
    folder: Path,
    names: Sequence[str],
    errors: list[str] | None,
    root: Path | None = None,
) -> DataNotFoundError:
    """The one-line error for files neither on disk nor downloaded (``errors`` None: download
    disabled; else the download failures, the last three shown)."""
    how = (
        "download is disabled (data.download=false)"
        if errors is None
        else f"download failed ({'; '.join(errors[-3:])})"
    )
    return DataNotFoundError(
        f"{what} files not found in {folder} (looked for {', '.join(names)}); {how}. "
        f"Set DATA_DIR or paths.data_dir to a folder holding {holding(folder, root)}, "
        "or run online to download."
    )


def holding(folder: Path, root: Path | None) -> str:
    """``MNIST/raw/`` for ``<root>/MNIST/raw`` (what the data folder must hold), else "them"."""
    try:
        return f"{folder.relative_to(root).as_posix()}/" if root is not None else "them"
    except ValueError:
        return "them"
