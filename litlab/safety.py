"""What may be built from a config that came from elsewhere: litlab's allow-list of ``_target_``s.

A checkpoint stores its nets, optimiser and scheduler as ``_target_`` configs, and rebuilding
the model instantiates them. ``torch.load(weights_only=True)`` keeps pickled code out of the
file, but Hydra's ``instantiate`` calls whatever importable callable a ``_target_`` names
(``numpy.savetxt``, ``shutil.copy``, ``builtins.open`` pass Hydra's own block-list), so a
checkpoint from elsewhere could still run code. :func:`check_targets` is the one rule: every
``_target_`` at any depth (dicts, lists, ``_args_``) must be

* a class defined in litlab's model package (``lightning_modules.*``) that is an ``nn.Module``, a
  ``torch.optim.Optimizer`` or a learning-rate scheduler (never a function, never another
  package of litlab: ``litlab.files.write_csv`` writes files), or
* one of the named torch classes in :data:`TORCH_TARGETS` (optimisers and schedulers).

The name is checked as a string before anything is imported, so a refused target is never
imported nor called. Old checkpoints name classes by the paths of their day: :data:`RENAMED`
maps them to today's, in this one place (:func:`current_target`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from litlab.errors import CheckpointError

MODEL_PACKAGE = "lightning_modules."
TORCH_TARGETS = frozenset(
    f"torch.optim.{name}"
    for name in (
        "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta",
    )
) | frozenset(
    f"torch.optim.lr_scheduler.{name}"
    for name in (
        "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
        "OneCycleLR", "LinearLR", "ConstantLR", "PolynomialLR", "ReduceLROnPlateau",
    )
)  # fmt: skip

# Classes that moved since a checkpoint was written: old `_target_` -> today's.
RENAMED: dict[str, str] = {
    "lightning_modules.transformer_lm.WarmupSchedule": "lightning_modules.schedules.WarmupSchedule",
}


def current_target(name: str) -> str:
    """Today's path of a ``_target_`` that an older litlab wrote under another name."""
    return RENAMED.get(name, name)


def with_current_targets(config: Any) -> Any:
    """A copy of a plain config tree with every ``_target_`` renamed by :func:`current_target`."""
    if isinstance(config, Mapping):
        return {
            key: current_target(value) if key == "_target_" and isinstance(value, str)
            else with_current_targets(value)
            for key, value in config.items()
        }  # fmt: skip
    if isinstance(config, list | tuple):
        return [with_current_targets(item) for item in config]
    return config


def targets(config: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``_target_`` of a plain config tree, with its key path (``encoder._args_[0]``)."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield here, value
            else:
                yield from targets(value, here)
    elif isinstance(config, list | tuple):
        for index, item in enumerate(config):
            yield from targets(item, f"{path}[{index}]")


def is_allowed(name: Any) -> bool:
    """Whether ``_target_`` ``name`` is on the allow-list (see the module docstring)."""
    if not isinstance(name, str):
        return False
    name = current_target(name)
    if name in TORCH_TARGETS:
        return True
    module_name, _, attribute = name.rpartition(".")
    if not name.startswith(MODEL_PACKAGE) or not attribute.isidentifier():
        return False
    if not all(part.isidentifier() for part in module_name.split(".")):
        return False
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return False
    if not inspect.isclass(target) or not target.__module__.startswith(MODEL_PACKAGE):
        return False  # a function, or a class imported into litlab's module from elsewhere
    bases = (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    return issubclass(target, bases)


def check_targets(config: Any, source: str) -> None:
    """Refuse, before anything is built, a config tree holding a ``_target_`` off the allow-list.

    Raises :class:`CheckpointError` naming ``source`` (the file), the key path and the target.
    """
    for path, name in targets(config):
        if not is_allowed(name):
            raise CheckpointError(
                f"{source}: refused to build {path}={name!r}: not on litlab's allow-list "
                "(litlab's own nets, optimisers and schedulers, and torch's optimisers and "
                "schedulers); a checkpoint is data, never code"
            )
