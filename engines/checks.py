"""Checks of a config's values, one line each naming the key: for the learned fusion engine's
config (engines.fusion.learned_config) and the training config that builds it
(replay.training), which read them from YAML (where `true` is an int and `.inf` a float)."""

from __future__ import annotations

import math
import re
import reprlib
from decimal import Decimal

import yaml

__all__ = [
    "brief",
    "check_count",
    "check_number",
    "check_probability",
    "check_range",
    "finite_number",
    "yaml_text_hint",
]

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 2
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = 4
_BRIEF.maxstring = _BRIEF.maxother = 60


def brief(value: object) -> str:
    """``repr(value)`` cut to a short line, for error messages: a YAML file may hold a list
    that its aliases repeat a billion times, whose whole repr would take minutes and
    gigabytes (the guard against alias bombs is the calibration package's YAML loader, which
    engines may not import)."""
    return _BRIEF.repr(value)


#: Where YAML 1.1 reads a float: a dot in the mantissa, a sign in the exponent (`1.0e-1`).
_EXPONENT = re.compile(r"([-+]?)(\d*)\.?(\d*)([eE])([-+]?)(\d+)")
# A number YAML reads as the same value unquoted, and the rigs' and configs' loader takes
# (calibration.errors refuses `7_00`, `1:30`, `0755` and `0b101`, which YAML 1.1 misreads):
# only such a number may be told to lose its quotes.
_PLAIN_NUMBER = re.compile(r"[-+]?(0|[1-9]\d*)(\.\d*)?([eE][-+]\d+)?|[-+]?\.\d+([eE][-+]\d+)?")


def finite_number(value: object) -> float | None:
    """``value`` as a float, None when it is not a finite number."""
    # A YAML `true` is an int to Python, but as a rate or a size it is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        v = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return v if math.isfinite(v) else None


def check_number(
    value: object, name: str, low: float, high: float, *, above_low: bool = False
) -> float:
    """``value`` as a float: a finite number in [``low``, ``high``] (``low`` excluded when
    ``above_low``).

    Raises:
        ValueError: one line naming ``name``, the range and the value.
    """
    v = finite_number(value)
    if v is None or not ((v > low if above_low else v >= low) and v <= high):
        bracket = "(" if above_low else "["
        raise ValueError(
            f"{name} must be a number in {bracket}{low:g}, {high:g}], got {brief(value)}"
            f"{yaml_text_hint(value)}"
        )
    return v


def check_probability(value: object, name: str) -> float:
    """``value`` as a float in [0, 1].

    Raises:
        ValueError: one line naming ``name`` and the value.
    """
    v = finite_number(value)
    if v is None or not 0.0 <= v <= 1.0:
        raise ValueError(
            f"{name} must be a probability in [0, 1], got {brief(value)}{yaml_text_hint(value)}"
        )
    return v


def check_count(value: object, name: str, low: int, high: int) -> int:
    """``value``: an integer from ``low`` to ``high``.

    Raises:
        ValueError: one line naming ``name``, the bounds and the value.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(
            f"{name} must be an integer from {low} to {high:,}, got {brief(value)}"
            f"{yaml_text_hint(value, integer=True)}"
        )
    return value


def check_range(
    value: object, name: str, low: float, high: float, *, above_low: bool = False
) -> tuple[float, float]:
    """``value`` as a [low, high] pair of numbers in [``low``, ``high``] (``low`` excluded
    when ``above_low``), the first <= the second.

    Raises:
        ValueError: one line naming ``name``, the bounds and the value.
    """
    pair = list(value) if isinstance(value, list | tuple) else None
    if pair is None or len(pair) != 2:
        raise ValueError(f"{name} must be a [low, high] pair, got {brief(value)}")
    lo, hi = (check_number(v, name, low, high, above_low=above_low) for v in pair)
    if lo > hi:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {pair}")
    return lo, hi


def yaml_text_hint(text: object, *, integer: bool = False) -> str:
    """Why a number field got `text`, when it is a string that reads as a number: YAML 1.1
    reads `1e-1` (no dot, no exponent sign) and anything quoted as text. Empty for anything
    else. Begins with a space, to follow the error it explains."""
    if not isinstance(text, str):
        return ""
    try:
        number = float(text)
    except ValueError:
        return ""
    if not math.isfinite(number) or (integer and not number.is_integer()):
        return ""
    as_yaml = yaml.safe_load(text)
    if (
        isinstance(as_yaml, int | float)
        and not isinstance(as_yaml, bool)
        and _PLAIN_NUMBER.fullmatch(text.strip())
    ):
        return " (quoted, it is text: write it without quotes)"
    if integer:
        spelled = str(int(Decimal(text.strip())))  # exact: 1e30 is no float's 1000...19884624838656
    else:
        m = _EXPONENT.fullmatch(text.strip())
        spelled = (
            f"{m[1]}{m[2] or '0'}.{m[3] or '0'}{m[4]}{m[5] or '+'}{m[6]}"
            if m and (m[2] or m[3])
            else ""
        )
        if not spelled or yaml.safe_load(spelled) != number:
            spelled = yaml.safe_dump(number).split("\n")[0]
    return f" (YAML reads {text} as text: write {spelled})"
