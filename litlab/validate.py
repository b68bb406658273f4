"""Config checks before anything is built: required values present, types and ranges right.

Every ``_target_`` node's keys are checked against the type hints of the target's signature, so
``trainer.max_epochs=abc``, ``model.z_dim=0`` or ``model.encoder.hidden_dims=[a,b]`` fails at once
with the key, the value and what is expected, instead of deep inside a training loop. Understood
hints: ``int``, ``float`` (an int passes), ``bool``, ``str``, ``None``, ``Literal``, unions of them,
``Tensor`` (read as a number), sequences of them (``Sequence[int]``, ``list[float]``), and
``Annotated[..., <annotated_types constraint>]`` (``Ge``, ``Gt``, ``Le``, ``Lt``, ``Interval``: the
ranges each class declares with :mod:`litlab.ranges`). Anything else is left to the target.

Targets litlab does not own (torch optimisers, the Trainer) get their ranges from
:data:`EXTERNAL_HINTS`, the top-level keys (``seed``, ``test_ckpt``) from :data:`TOP_LEVEL_HINTS`.
Rules that tie two config values together live in :func:`check_cross`.
"""

from __future__ import annotations

import inspect
import itertools
import operator
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Gt, Interval, Le, Lt
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from litlab.errors import ConfigError
from litlab.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Seed

PLAIN_TYPES = (int, float, bool, str, type(None))
LIGHTNING_SCHEDULER_KEYS = ("interval", "frequency", "monitor", "strict", "name")
SEQUENCE_ORIGINS = (list, tuple, Sequence, typing.Sequence)

# The top-level keys of conf/train.yaml that train.py reads, with their hints (checked like a
# target's arguments; test_ckpt: the weights tested after a fit).
TOP_LEVEL_HINTS: dict[str, Any] = {
    "train": bool,
    "test": bool,
    "test_ckpt": Literal["best", "last"],
    "ckpt_path": str | None,
    "seed": Seed | None,
    "optimized_metric": str | None,
    "optimized_mode": Literal["min", "max"],
}

# Ranges of arguments of classes litlab does not own: target prefix -> {argument: hint}.
EXTERNAL_HINTS: dict[str, dict[str, Any]] = {
    "torch.optim.": {
        "lr": NonNegativeFloat,  # 0 freezes the weights (torch allows it)
        "weight_decay": NonNegativeFloat,
        "momentum": NonNegativeFloat,
        "eps": PositiveFloat,
    },
    "torch.optim.lr_scheduler.": {
        "step_size": PositiveInt,
        "gamma": PositiveFloat,
        "T_max": PositiveInt,
        "eta_min": NonNegativeFloat,
    },
    "lightning.": {
        "max_epochs": Annotated[int, Ge(-1)] | None,
        "min_epochs": NonNegativeInt | None,
        "max_steps": Annotated[int, Ge(-1)],
        "accumulate_grad_batches": PositiveInt,
        "gradient_clip_val": NonNegativeFloat | None,
        "log_every_n_steps": PositiveInt,
        "check_val_every_n_epoch": PositiveInt | None,
        "num_nodes": PositiveInt,
        "every_n_train_steps": NonNegativeInt | None,
        "save_top_k": Annotated[int, Ge(-1)],
        "refresh_rate": NonNegativeInt,
    },
}


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a missing mandatory value (``???``), a mistyped or
    out-of-range value, or values that contradict each other."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    except InterpolationKeyError as err:
        raise ConfigError(
            f"{err.full_key}: {str(err.msg).splitlines()[0]} (if the model's config refers to it, the model and the "
            "data do not fit: drop data=...)"
        ) from None
    if missing:
        raise ConfigError(f"required config value not set: {', '.join(missing)} (give key=value)")
    check_values(cfg, TOP_LEVEL_HINTS, prefix="")
    for path, node in target_nodes(cfg):
        check_node(path, node)
    check_cross(cfg)


def check_cross(cfg: DictConfig) -> None:
    """The rules between config values, in one place."""
    if not cfg.get("train", True) and not cfg.get("test", True):
        raise ConfigError("train=false test=false: nothing to do (set one of them to true)")
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    bptt, max_len = data.get("bptt"), model.get("max_len")
    if isinstance(bptt, int) and isinstance(max_len, int) and bptt > max_len:
        raise ConfigError(
            f"data.bptt={bptt} is longer than model.max_len={max_len} (the positional table): "
            "lower data.bptt or raise model.max_len"
        )


def check_fit(model: DictConfig, facts: dict[str, Any], data_target: str) -> None:
    """The model and the data must fit: every fact the data module gives (``model_kwargs``) is
    an argument of the model, and every argument the model requires is in its config or among
    those facts (``model=vae_mlp data=wikitext2`` fails here, not inside the model)."""
    try:
        parameters = inspect.signature(get_object(str(model._target_))).parameters
    except Exception:  # noqa: BLE001  (an unresolvable target reports itself when built)
        return
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    unknown = [key for key in facts if key not in parameters]
    missing = [
        name for name, p in parameters.items()
        if p.kind in kinds and p.default is p.empty and name not in model and name not in facts
    ]  # fmt: skip
    if unknown or missing:
        parts = [f"the data gives {', '.join(unknown)}, which the model does not take"] * bool(
            unknown
        ) + [f"the model needs {', '.join(missing)}, which the data does not give"] * bool(missing)
        raise ConfigError(
            f"model {model._target_} and data {data_target} do not fit ({'; '.join(parts)}): "
            "drop data=... to use the data set the model's config brings"
        )


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


def target_hints(name: str) -> dict[str, Any]:
    """The type hints of a ``_target_``'s parameters, its external ranges merged in."""
    hints: dict[str, Any] = {}
    try:
        target = get_object(name)
        function = target.__init__ if inspect.isclass(target) else target
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception:  # noqa: BLE001  (unresolvable target or hints: the target checks itself)
        pass
    for prefix, extra in EXTERNAL_HINTS.items():
        if name.startswith(prefix):
            hints |= extra
    return hints


def check_node(path: str, node: DictConfig) -> None:
    """The node's keys against its ``_target_``'s parameters, and its values against their type
    hints (and declared ranges)."""
    check_keys(path, node)
    check_values(node, target_hints(str(node._target_)), f"{path}.", str(node._target_))


def check_values(node: DictConfig, hints: dict[str, Any], prefix: str, whose: str = "") -> None:
    """Each value of ``node`` that ``hints`` has a hint for, against it: a :class:`ConfigError`
    naming ``<prefix><key>``, the value, what is wrong and (``whose``) the target it is an
    argument of."""
    for key, hint in hints.items():
        if key == "return" or key not in node:
            continue
        found = problem(node[key], hint)
        if found is not None:
            argument = f" ({whose} argument '{key}')" if whose else ""
            raise ConfigError(f"{prefix}{key}={shown(node[key])}: {found}{argument}")


def check_keys(path: str, node: DictConfig) -> None:
    """Refuse a key its ``_target_`` takes no argument for (a target with ``**kwargs`` takes all;
    Hydra's ``_..._`` keys and Lightning's scheduler keys are not arguments)."""
    try:
        parameters = inspect.signature(get_object(str(node._target_))).parameters
    except Exception:  # noqa: BLE001  (an unresolvable target reports itself when built)
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in node:
        key = str(key)
        if key.startswith("_") or key in parameters or key in LIGHTNING_SCHEDULER_KEYS:
            continue
        raise ConfigError(
            f"{path}.{key}: {node._target_} takes no argument '{key}' (takes: "
            f"{', '.join(n for n in parameters if n != 'self')}); if a model brought this key, "
            "the model and the data do not fit: drop data=..."
        )


def shown(value: Any) -> str:
    """A config value as the user typed it (lists as lists)."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return repr(value)


def problem(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for ``hint`` (``"expected int"``, ``"must be >= 1"``), or
    None when it fits or the hint is not one this module understands."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *constraints = typing.get_args(hint)
        found = problem(value, base)
        if found is not None:
            return found
        for constraint in constraints:
            if not satisfies(value, constraint):
                return f"must be {describe_constraint(constraint)}"
        return None
    if origin in (typing.Union, types.UnionType):
        found = [problem(value, arg) for arg in typing.get_args(hint)]
        if any(f is None for f in found):
            return None
        range_problems = [f for f in found if f.startswith(("must", "item"))]
        if range_problems:  # the value has a right type but is out of that type's range
            return range_problems[0]
        return "expected " + " or ".join(dict.fromkeys(f.removeprefix("expected ") for f in found))
    if origin is Literal:
        options = typing.get_args(hint)
        if any(value == o and type(value) is type(o) for o in options):
            return None
        return f"expected one of {', '.join(map(repr, options))}"
    if origin in SEQUENCE_ORIGINS:
        return sequence_problem(value, typing.get_args(hint))
    if hint is torch.Tensor:  # e.g. ``lr: float | Tensor``: from a config, a number
        hint = float
    if hint not in PLAIN_TYPES:
        return None
    return None if is_instance(value, hint) else f"expected {type_name(hint)}"


def sequence_problem(value: Any, args: tuple[Any, ...]) -> str | None:
    """A list whose items fit ``args``: ``Sequence[X]`` and ``tuple[X, ...]`` any number of X,
    ``tuple[X, Y, Z]`` exactly three items, the i-th fitting the i-th hint."""
    if not isinstance(value, ListConfig | list | tuple):
        return "expected a list"
    fixed = len(args) > 1 and args[-1] is not Ellipsis
    if fixed and len(value) != len(args):
        return f"expected a list of {len(args)} items, got {len(value)}"
    # a fixed tuple's hints have the value's length (checked); repeat() is endless: not strict
    item_hints = args if fixed else itertools.repeat(args[0] if args else Any)
    for index, (item, item_hint) in enumerate(zip(value, item_hints, strict=False)):
        found = problem(item, item_hint)
        if found is not None:
            return f"item {index} ({item!r}) {found}"
    return None


def is_instance(value: Any, kind: type) -> bool:
    """Whether ``value`` is a ``kind`` (an int passes for a float; a bool is no number)."""
    if kind in (int, float):
        number_types = int if kind is int else int | float
        return isinstance(value, number_types) and not isinstance(value, bool)
    return isinstance(value, kind)


OPERATORS = {"gt": (">", operator.gt), "ge": (">=", operator.ge), "lt": ("<", operator.lt),
             "le": ("<=", operator.le)}  # fmt: skip


def bounds(constraint: Any) -> list[tuple[str, Any]]:
    """The ``(operator name, limit)`` pairs of an ``annotated_types`` bound (none for others)."""
    if isinstance(constraint, Interval):
        return [
            (op, getattr(constraint, op)) for op in OPERATORS if getattr(constraint, op) is not None
        ]
    for kind in (Gt, Ge, Lt, Le):
        if isinstance(constraint, kind):
            op = kind.__name__.lower()
            return [(op, getattr(constraint, op))]
    return []


def satisfies(value: Any, constraint: Any) -> bool:
    """Whether a number meets every bound of ``constraint``."""
    return all(OPERATORS[op][1](value, limit) for op, limit in bounds(constraint))


def describe_constraint(constraint: Any) -> str:
    """``>= 1``, ``>= 0 and <= 1``: a bound in words."""
    return " and ".join(f"{OPERATORS[op][0]} {limit:g}" for op, limit in bounds(constraint))


def type_name(kind: type) -> str:
    return "None" if kind is type(None) else kind.__name__
