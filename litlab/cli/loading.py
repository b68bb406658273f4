"""One loader for every ``litlab`` command: a checkpoint in, a model of the right kind out.

:func:`load_model` reads the file only through litlab's safe path: the raw contents with
:func:`litlab.checkpoints.load_checkpoint` (``weights_only=True``: tensors and plain containers,
never pickled code), then the model with :meth:`lightning_modules.base.LitModule.load_from_checkpoint`,
which refuses any stored ``_target_`` off litlab's allow-list before anything is built. The kind
of model is told from the stored hyperparameters (:data:`KINDS`). Every way it can fail is one
:class:`~litlab.errors.CheckpointError` or :class:`~litlab.cli.common.UsageError` that names the
file: a missing or corrupt file, another kind of checkpoint than the command needs, weights that
are not finite, hyperparameters that do not build the model or weights that do not fit it, and a
``--device`` this machine does not have.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from litlab.checkpoints import load_checkpoint, non_finite_tensor
from litlab.cli.common import UsageError
from litlab.errors import CheckpointError, LitlabError


@dataclass(frozen=True)
class Kind:
    """A kind of model: its name for people, its class, and the stored hyperparameters that
    identify it (every one must be present)."""

    name: str
    model: str  # "module:Class"
    datamodule: str  # "module:Class" of the data it is trained and evaluated on
    keys: frozenset[str]

    def load_class(self, which: str = "model") -> type:
        module, _, attribute = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), attribute)


KINDS: dict[str, Kind] = {
    "vae": Kind("VAE", "lightning_modules.vae:VAE", "datamodules.mnist:MNISTDataModule",
                frozenset({"encoder", "decoder", "z_dim"})),
    "seq2seq": Kind("Seq2Seq", "lightning_modules.seq2seq:Seq2Seq",
                    "datamodules.eng_fra:EngFraDataModule",
                    frozenset({"src_vocab", "tgt_vocab", "hidden_dim"})),
    "transformer_lm": Kind("Transformer LM", "lightning_modules.transformer_lm:TransformerLM",
                           "datamodules.wikitext2:WikiText2DataModule",
                           frozenset({"vocab_size", "d_model", "num_layers"})),
}  # fmt: skip


@dataclass
class Loaded:
    """A model loaded by :func:`load_model`, in eval mode on its device."""

    model: Any  # a litlab LightningModule
    path: Path
    kind: str  # a key of KINDS
    checkpoint: dict[str, Any]  # the raw contents (hyperparameters, datamodule_hyper_parameters)
    device: torch.device


def check_device(device: str) -> torch.device:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N`` that this machine has; else a UsageError."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device}: not a device (use cpu, cuda or cuda:N)") from None
    if parsed.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: litlab's commands run on cpu or cuda")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: no CUDA GPU is available on this machine "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"--device {device}: this machine has {count} CUDA device(s)")
    return parsed


def kind_of(hyper_parameters: Any) -> str | None:
    """The key of :data:`KINDS` whose identifying hyperparameters are all stored, else None."""
    if not isinstance(hyper_parameters, dict):
        return None
    for key, kind in KINDS.items():
        if kind.keys <= hyper_parameters.keys():
            return key
    return None


def read_checkpoint(
    path: str | os.PathLike, kind: str | None = None, command: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The checkpoint's kind and raw contents, read safely; refused unless it is a ``kind``
    checkpoint (any litlab model when None) with finite weights."""
    if not Path(path).is_file():
        what = "a folder, not a checkpoint file" if Path(path).is_dir() else "no such file"
        raise CheckpointError(f"{path}: {what}")
    checkpoint = load_checkpoint(path)  # corrupt, or pickled code: refused unread
    found = kind_of(checkpoint.get("hyper_parameters"))
    if found is None:
        raise CheckpointError(
            f"{path} holds no litlab model's hyperparameters: give a checkpoint that train.py "
            f"wrote ({', '.join(k.name for k in KINDS.values())})"
        )
    if kind is not None and found != kind:
        needs = f"`litlab {command}` needs" if command else "this needs"
        raise CheckpointError(
            f"{path} is a {KINDS[found].name} checkpoint; {needs} a {KINDS[kind].name} checkpoint"
        )
    bad = non_finite_tensor(checkpoint["state_dict"])
    if bad is not None:
        raise CheckpointError(f"{path}: refused, its weights are not finite: {bad}")
    return found, checkpoint


def load_model(
    path: str | os.PathLike,
    kind: str | None = None,
    device: str | torch.device = "cpu",
    command: str | None = None,
) -> Loaded:
    """The model a checkpoint holds, in eval mode on ``device``; see the module docstring.

    ``kind`` (a key of :data:`KINDS`) is the kind the caller needs (None: any); ``command`` names
    the ``litlab`` command in the message for a checkpoint of another kind.
    """
    device = check_device(str(device))
    path = Path(path)
    found, checkpoint = read_checkpoint(path, kind, command)
    spec = KINDS[found]
    try:
        model = spec.load_class().load_from_checkpoint(path, map_location=device)
    except LitlabError as err:  # an unsafe _target_ (CheckpointError), a refused value
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"{path}: its hyperparameters do not build a {spec.name}: {err}"
        ) from None
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {state_dict_mismatch(err, spec.name)}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(
            f"{path}: its hyperparameters do not build a {spec.name} ({first_line(err)})"
        ) from None
    model.eval()
    return Loaded(model, path, found, checkpoint, device)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def state_dict_mismatch(error: RuntimeError, name: str) -> str:
    """torch's "Error(s) in loading state_dict for X:" and the lines that say what is wrong, as
    one line: the first mismatch and how many there are (another vocabulary or model size)."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    if not lines or not lines[0].startswith("Error(s) in loading state_dict"):
        return f"cannot load it into a {name} ({first_line(error)})"
    details = [line for line in lines[1:] if line]
    if not details:
        return f"its weights do not fit the {name} its hyperparameters describe"
    first = details[0].rstrip(".")
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return (
        f"its weights do not fit the {name} its hyperparameters describe: {first}{more}; "
        "were its vocabulary or sizes edited?"
    )


def build_datamodule(
    kind: str,
    checkpoint: dict[str, Any],
    data_dir: str | os.PathLike,
    source: str | os.PathLike,
    **overrides: Any,
) -> Any:
    """The data module of a ``kind`` of model (a key of :data:`KINDS`), with the settings its run
    stored in the checkpoint (``datamodule_hyper_parameters``, written by Lightning; the class
    defaults where there are none), ``data_dir`` and ``overrides`` replacing theirs. ``source``
    (the checkpoint's path) names the file in errors. Nothing is read yet."""
    cls = KINDS[kind].load_class("datamodule")
    accepted = inspect.signature(cls.__init__).parameters
    stored = checkpoint.get("datamodule_hyper_parameters")
    settings = (
        {k: v for k, v in stored.items() if k in accepted} if isinstance(stored, dict) else {}
    )
    settings |= {"data_dir": str(data_dir), **overrides}
    try:
        return cls(**settings)
    except LitlabError:
        raise
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{source}: its stored data settings do not build a {cls.__name__} ({first_line(err)})"
        ) from None
