"""Finding, downloading and verifying data files.

Every data module resolves its files the same way: look in ``paths.data_dir`` first; if a file is
missing and ``download`` is on, fetch it from each mirror in turn, verify its SHA-256 and move it
into place atomically; otherwise raise :class:`DataNotFoundError` naming the folder, the files and
how to fix it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from litlab.errors import DataError, DataNotFoundError

__all__ = ["DataError", "DataNotFoundError", "download_file", "fetch_missing", "sha256sum"]


def sha256sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, sha256: str | None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``: write a temporary file beside it, verify, then rename.

    A failed or interrupted download never leaves a partial ``dest`` behind.
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


def fetch_missing(
    folder: Path,
    files: dict[str, str | None],
    mirrors: Sequence[str],
    download: bool,
    what: str,
) -> None:
    """Make sure every name in ``files`` (name -> sha256 or None) exists in ``folder``.

    Missing files are downloaded from the first mirror that serves them (``mirror + name``) when
    ``download`` is true. Raises :class:`DataNotFoundError` with an actionable message when a file
    is still missing, and :class:`DataError` when a download fails its checksum.
    """
    missing = [name for name in files if not (folder / name).is_file()]
    if not missing:
        return
    errors: list[str] = []
    if download:
        for name in list(missing):
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                try:
                    download_file(url, folder / name, files[name])
                    missing.remove(name)
                    break
                except (urllib.error.URLError, OSError, TimeoutError) as err:
                    if isinstance(err, PermissionError):
                        errors.append(f"cannot write to {folder}: {err}")
                        break
                    errors.append(f"{url}: {getattr(err, 'reason', err)}")
    if missing:
        how = (
            f"download failed ({'; '.join(errors[-3:])})"
            if download
            else "download is disabled (data.download=false)"
        )
        raise DataNotFoundError(
            f"{what} files not found in {folder} (looked for {', '.join(missing)}); {how}. "
            "Set DATA_DIR or paths.data_dir to a folder holding them, or run online to download."
        )
