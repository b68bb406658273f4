"""Checkpoints: written atomically, loaded safely, checked against the model before use.

* :class:`AtomicCheckpointIO` (the trainer's ``plugins``) writes each checkpoint to a temporary
  file beside it and renames it into place, so a kill mid-write leaves the previous
  ``last.ckpt`` intact.
* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: tensors and plain
  containers only; a pickled object (code) is refused, never executed.
* :func:`check_checkpoint` refuses a checkpoint from another model or another vocabulary with one
  line naming the file and the difference, before Lightning touches it.
* :func:`resolve_ckpt_path` turns ``ckpt_path=last`` into the newest ``last.ckpt`` of the task.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from litlab.errors import CheckpointError
from litlab.files import atomic_write

MIN_FREE_BYTES = 1 << 20  # below this, a failed write is taken for a full disk


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary sibling file, fsync, then ``os.replace`` (local paths).

    Remote paths (``s3://...``) keep Lightning's own writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        try:
            with atomic_write(path) as tmp:
                torch.save(checkpoint, tmp)
        except (RuntimeError, OSError) as err:
            raise write_error(err, Path(path)) from None


def write_error(error: BaseException, path: Path) -> OSError:
    """The :class:`OSError` to report for a failed checkpoint write (the previous file is kept).

    A full disk surfaces from ``torch.save`` as a zip-writer ``RuntimeError`` ("unexpected pos
    ..."); it is named as what it is.
    """
    if isinstance(error, OSError) and error.errno not in (None, errno.ENOSPC):
        return error
    free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
    if getattr(error, "errno", None) == errno.ENOSPC or free < MIN_FREE_BYTES:
        return OSError(
            errno.ENOSPC, "No space left on device (the previous checkpoint is kept)", str(path)
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return OSError(errno.EIO, f"could not write the checkpoint ({first})", str(path))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents on the CPU, read with ``weights_only=True``.

    Raises :class:`CheckpointError` naming the file when it is missing, not a checkpoint
    (truncated, corrupt, another format) or carries pickled Python objects (refused unread).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        globals_ = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if globals_:
            raise CheckpointError(
                f"{path}: refused, it holds pickled Python objects ({globals_[0]}); litlab loads "
                "weights_only=True: tensors and plain containers, never code"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt or not a checkpoint)"
        ) from None
    except Exception as err:  # noqa: BLE001  (torch.load on arbitrary bytes raises anything)
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint, truncated or corrupt ({first_line})"
        ) from None
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' in it)")
    return dict(checkpoint)


def check_checkpoint(
    path: str | os.PathLike, model: nn.Module, data_facts: Mapping[str, Any], resume: bool = False
) -> None:
    """Refuse a checkpoint that cannot continue this run's model on this run's data.

    ``data_facts`` are what the data module told the model (vocabularies, sizes); the checkpoint
    stored the same arguments among its hyperparameters, and they must be equal. Then the
    parameter names and shapes must match the model's.
    """
    checkpoint = load_checkpoint(path)
    if resume and not {"optimizer_states", "loops"} <= checkpoint.keys():
        raise CheckpointError(
            f"{path} holds weights only (no optimiser state or loop position), so training cannot "
            "resume from it: evaluate it with train=false ckpt_path=<file>, or load its weights "
            "with <Model>.load_from_checkpoint(<file>) and start a new run"
        )
    bad = non_finite_tensor(checkpoint["state_dict"])
    if bad is not None:
        raise CheckpointError(f"{path}: refused, its weights are not finite: {bad}")
    stored = checkpoint.get("hyper_parameters", {})
    for key, value in data_facts.items():
        if key in stored and stored[key] != value:
            raise CheckpointError(
                f"{path} was trained with another {key} ({summarize(stored[key])}; this data "
                f"gives {summarize(value)}): train on the data it was made with, or start afresh"
            )
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    if expected.keys() != found.keys():
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        raise CheckpointError(
            f"{path} is from another model: {len(missing)} of this model's weights are missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) and "
            f"{len(unexpected)} are unknown ({', '.join(unexpected[:3])}"
            f"{', ...' if len(unexpected) > 3 else ''})"
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise CheckpointError(
                f"{path} does not fit this model: {name} has shape {found[name]} there, "
                f"{shape} here (another model size or vocabulary)"
            )


def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN/inf, or whose norm overflows (its values
    are too large to compute with), as ``"name (nan)"``; None when all are finite."""
    names = [n for n, t in tensors.items() if torch.is_floating_point(t) and t.numel()]
    if not names:
        return None
    values = [tensors[n].detach() for n in names]
    norms = torch.stack([n.float() for n in torch._foreach_norm(values)])
    finite = torch.isfinite(norms)
    if bool(finite.all()):  # one host sync
        return None
    index = int((~finite).nonzero()[0])
    kind = "nan" if bool(torch.isnan(values[index]).any()) else "inf"
    if kind == "inf" and bool(torch.isfinite(values[index]).all()):
        kind = "values overflowing float32"
    return f"{names[index]} ({kind})"


def summarize(value: Any) -> str:
    """A short description of a hyperparameter value (lists by length and first items)."""
    if isinstance(value, list | tuple):
        head = ", ".join(map(repr, value[:3]))
        return f"{len(value)} entries [{head}{', ...' if len(value) > 3 else ''}]"
    return repr(value)


def save_final_state(trainer: Any) -> None:
    """Refresh ``last.ckpt`` when fit stopped (``max_steps``, ``max_time``) after its last save,
    so a finished run's ``last.ckpt`` always holds its final weights."""
    if trainer.interrupted:
        return
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}.ckpt"
            saved = -1
            if path.is_file():
                saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)[
                    "global_step"
                ]
            if saved != trainer.global_step:
                trainer.save_checkpoint(path)
            return


def resolve_ckpt_path(ckpt_path: str | None, task_dir: str | os.PathLike) -> str | None:
    """``"last"`` -> the newest ``last.ckpt`` under ``task_dir`` (``logs/<task_name>``)."""
    if ckpt_path != "last":
        return ckpt_path
    candidates = sorted(Path(task_dir).glob("**/checkpoints/last.ckpt"), key=os.path.getmtime)
    if not candidates:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoints/last.ckpt under {task_dir}; pass the file's path"
        )
    return str(candidates[-1])
