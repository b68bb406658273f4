"""The errors a user can cause and fix: each prints as one short message, never a traceback.

Raise :class:`LitlabError` subclasses with a message that names the culprit (file, config key,
value) and says what to do. ``train.py`` reports them, the configuration and data errors of
OmegaConf and Lightning, and a ``ValueError`` a constructor raises inside Hydra's ``instantiate``
(:func:`user_error`), as :class:`RunError`, which Hydra prints as its message alone
(``HYDRA_FULL_ERROR=1`` shows the whole traceback). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

from hydra.errors import CompactHydraException, InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf.errors import OmegaConfBaseException


class LitlabError(Exception):
    """Base class of the errors a user can fix: bad config values, data or checkpoints."""


class ConfigError(LitlabError, ValueError):
    """A config value of the wrong type or outside its range, or a required key missing."""


class DataError(LitlabError, RuntimeError):
    """A data file exists but cannot be used (bad checksum, truncated, wrong format)."""


class DataNotFoundError(LitlabError, FileNotFoundError):
    """Data files are neither on disk nor downloadable."""


class CheckpointError(LitlabError):
    """A checkpoint that is missing, unreadable, unsafe or from another model or data set."""


class NonFiniteLossError(LitlabError, ArithmeticError):
    """The training loss became NaN or infinite."""


class RunError(CompactHydraException):
    """What ``train.py`` raises for a user error: Hydra prints ``str(error)`` without traceback."""


# Errors whose own message tells the user what to fix. OSError: a file, folder, disk or device
# the user gave or the run writes to (read-only folder, full disk) could not be used.
USER_ERRORS: tuple[type[BaseException], ...] = (
    LitlabError,
    MisconfigurationException,
    OmegaConfBaseException,
    OSError,
)


def user_error(error: BaseException) -> tuple[str, BaseException] | None:
    """``(where, error)``: the error behind ``error`` that the user can fix, and the config key it
    was raised while building (``""`` if none); None for a bug, which keeps its traceback.

    ``hydra.utils.instantiate`` wraps what a constructor raises in an ``InstantiationException``,
    once per level of nesting (a model building its nets), with ``full_key: <key>`` in the message.
    Behind it, a ``ValueError`` is the object refusing its arguments (a net checks its own:
    ``d_model`` divisible by ``num_heads``), so it is reported like the user errors: one line.
    """
    if isinstance(error, USER_ERRORS):
        return "", error
    inner = error
    while isinstance(inner, InstantiationException) and inner.__cause__ is not None:
        inner = inner.__cause__
    if inner is error or not isinstance(inner, (*USER_ERRORS, ValueError)):
        return None
    key = re.search(r"^full_key: (\S+)", str(error), re.MULTILINE)
    return (key.group(1) if key else ""), inner


def describe(error: BaseException) -> str:
    """``ErrorType: message``, the one line a user sees; for an operating-system error (a file,
    folder, disk or device the run could not use) its reason and the path."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{type(error).__name__}: {error.strerror}{where}"
    return f"{type(error).__name__}: {error}"
