"""Valid ranges of numeric arguments, declared in the signature that takes them.

A constructor states what it accepts once, in its type hints, e.g.
``z_dim: PositiveInt = 20`` or ``dropout: Probability = 0.1``; :mod:`litlab.validate` reads these
hints (``typing.Annotated`` with ``annotated_types`` constraints) and refuses an out-of-range
config value before anything is built, naming the key, the value and the range. Use the aliases
below, or ``Annotated[float, Gt(0), Le(10)]`` for anything else.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Interval, Le, Lt

__all__ = [
    "FLOAT32_MAX", "Fraction", "Ge", "Gt", "Interval", "Le", "Lt", "NonNegativeFloat", "NonNegativeInt",
    "PositiveFloat", "PositiveInt", "Probability", "Seed",
]  # fmt: skip

FLOAT32_MAX = 3.4028234663852886e38  # a larger value overflows the float32 tensors it scales

PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0), Lt(FLOAT32_MAX)]
NonNegativeFloat = Annotated[float, Ge(0), Lt(FLOAT32_MAX)]
Probability = Annotated[float, Interval(ge=0, le=1)]
Fraction = Annotated[float, Interval(gt=0, lt=1)]  # a share of a data set, neither none nor all
Seed = Annotated[int, Interval(ge=0, lt=2**63)]
