"""Config checks before anything is built: required values present, simple types right.

Every ``_target_`` node's keys are checked against the type hints of the target's signature, so
``trainer.max_epochs=abc`` or ``model.optimizer.lr=fast`` fails at once with the key, the value
and the expected type, instead of deep inside a training loop. Only plain hints are checked
(``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal``, unions of them, and ``Tensor``
read as a number); anything else
is left to the target itself.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from litlab.errors import ConfigError

PLAIN_TYPES = (int, float, bool, str, type(None))


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a missing mandatory value (``???``) or a mistyped value."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"required config value not set: {', '.join(missing)} (give key=value)")
    for path, node in target_nodes(cfg):
        check_node(path, node)


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every ``_target_`` node of the tree, with its dotted path (``model.optimizer``)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if key != "hydra":
                yield from target_nodes(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node._iter_ex(resolve=False)):
            yield from target_nodes(item, f"{path}[{index}]")


def check_node(path: str, node: DictConfig) -> None:
    """The node's values against the type hints of its ``_target_``'s parameters."""
    try:
        target = get_object(node._target_)
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001  (unresolvable target or hints: the target checks itself)
        return
    for key, hint in hints.items():
        if key == "return" or key not in node:
            continue
        value = node[key]
        allowed = plain_choices(hint)
        if allowed is not None and not matches(value, allowed):
            raise ConfigError(
                f"{path}.{key}={value!r}: expected {describe_hint(allowed)} "
                f"({node._target_} argument '{key}')"
            )


def plain_choices(hint: Any) -> tuple[Any, ...] | None:
    """The plain types / literal values ``hint`` allows, or None when it is not that simple."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return tuple(("literal", v) for v in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        choices: list[Any] = []
        for arg in typing.get_args(hint):
            sub = plain_choices(arg)
            if sub is None:
                return None
            choices.extend(sub)
        return tuple(choices)
    if hint is torch.Tensor:  # e.g. ``lr: float | Tensor``: from a config, a number
        return (float,)
    return (hint,) if hint in PLAIN_TYPES else None


def matches(value: Any, allowed: tuple[Any, ...]) -> bool:
    """Whether ``value`` fits one of ``allowed`` (an int passes for a float; a bool is no int)."""
    for choice in allowed:
        if isinstance(choice, tuple):  # ("literal", v)
            if value == choice[1] and type(value) is type(choice[1]):
                return True
        elif choice in (int, float):
            number_types = int if choice is int else int | float
            if isinstance(value, number_types) and not isinstance(value, bool):
                return True
        elif isinstance(value, choice):
            return True
    return False


def describe_hint(allowed: tuple[Any, ...]) -> str:
    """``int or None``, ``one of '32-true', 'bf16-mixed'``: the hint in words."""
    literals = [repr(c[1]) for c in allowed if isinstance(c, tuple)]
    names = [
        c.__name__ if c is not type(None) else "None" for c in allowed if not isinstance(c, tuple)
    ]
    parts = list(dict.fromkeys(names)) + ([f"one of {', '.join(literals)}"] if literals else [])
    return " or ".join(parts)
