"""Server-side checks of settings: API clients skip the browser's limits, so every app checks
again here, with a sentence that names the setting and its range."""

from __future__ import annotations

import math

from shared.errors import UserError


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high] (an integral float such as 5.0 is fine), or a UserError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer() or not low <= number <= high:
        raise UserError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
    return int(number)


def number_in(name: str, value, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not low <= number <= high:  # NaN fails both comparisons
        raise UserError(f"{name} must be a number from {low} to {high}; got {value!r}.")
    return number
