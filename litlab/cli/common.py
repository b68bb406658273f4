"""What every ``litlab`` command shares: its argument parser, its one error boundary, outputs.

Every error a user can fix ends a command with one line on stderr, ``error: <what and where>``,
and exit status 1 (argparse's own usage errors included, which would otherwise exit 2 with a
usage block); outputs are checked before any work is done, so that a failing command writes
nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from litlab.errors import LitlabError


class UsageError(LitlabError):
    """A command line that cannot run: a bad option or value, an output that cannot be written."""


class CommandParser(argparse.ArgumentParser):
    """``argparse`` whose errors are :class:`UsageError` (one line, exit 1), not exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def run(body: Callable[[], int | None]) -> int:
    """Run a command's body at the one error boundary: a user error -> ``error: ...``, exit 1.

    :class:`~litlab.errors.LitlabError` (bad arguments, checkpoints, data) prints its message,
    :class:`OSError` (a file or folder that cannot be read or written) its reason and path.
    Anything else is a bug and keeps its traceback.
    """
    try:
        return body() or 0
    except LitlabError as err:
        message = str(err)
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        message = f"{err.strerror or err}{where}"
    print(f"error: {message}", file=sys.stderr)
    return 1


def run_command(
    build_parser: Callable[[str], CommandParser],
    body: Callable[[argparse.Namespace, str], None],
    argv: Sequence[str] | None,
    prog: str,
) -> int:
    """A command's ``main``: ``body(args, prog)`` on ``argv`` parsed by ``build_parser(prog)``
    (options may come anywhere on the line), both inside the one error boundary (:func:`run`),
    so that a usage error too ends with one ``error:`` line and exit status 1."""
    return run(lambda: body(build_parser(prog).parse_intermixed_args(argv), prog))


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", help="cpu (default), cuda or cuda:N (refused without CUDA)"
    )


def add_data_dir(parser: argparse.ArgumentParser, needed_for: str) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR") or "data"),
        help=f"folder of the data sets, for {needed_for} (default: $DATA_DIR, else data/)",
    )


def check_output(path: Path) -> Path:
    """Refuse, before any work, an output file whose folder cannot be made or written.

    The nearest existing ancestor must be a folder the user may write to (a path under a regular
    file is refused even as root, where permissions do not stop writes); missing folders are
    created when the file is written.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; give a file name (.png)")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {path}: the folder {ancestor} is not writable")
    return path


def quiet_lightning() -> None:
    """Keep Lightning's start-up notes and data-loader hints off a command's output."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
