"""Argument types and help formatting of the `perception` command.

Each type checks one value at parse time, so a wrong number is one line from argparse
(`perception <cmd>: error: argument --rate: 0 is not > 0 (...)`) and exit code 2, before
anything is loaded or written.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from perception.config import MAX_DURATION_S, MAX_RANGE_M

__all__ = [
    "HelpFormatter",
    "Parser",
    "correction_arg",
    "distance_m",
    "fraction",
    "int_at_most",
    "non_negative_float",
    "non_negative_int",
    "non_negative_seconds",
    "port",
    "positive_float",
    "positive_int",
    "positive_seconds",
    "rate_hz",
]

#: The longest duration a command takes, s (11.6 days): the node config's own bound on a
#: duration. Beyond some 9e9 s the OS's timers overflow, and nothing a person starts from a
#: shell waits this long on purpose.
MAX_SECONDS = MAX_DURATION_S
#: The highest rate sensors are played at (a lidar spins at 5-20 Hz, a camera at most a few
#: hundred frames a second).
MAX_RATE_HZ = 1000.0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (where it has one); descriptions are wrapped paragraph by
    paragraph (blank lines separate paragraphs)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(
                " ".join(paragraph.split()),
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,  # endpoints and paths stay whole
            )
            for paragraph in text.split("\n\n")
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Flags and options without a default would read "(default: False)" / "(default: None)".
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `perception <cmd>: error: <problem>`, and
    exit code 2 (argparse's own prints the usage first)."""

    _given: tuple[str, ...] = ()

    def parse_known_args(  # type: ignore[override]  # (one signature for typeshed's overloads)
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        # Kept for `error`, which is told only the problem, not the words it is about.
        self._given = tuple(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{_dash_value_hint(message, self._given)}\n")


#: argparse's message for an option given no value, `argument -o/--origin: expected one argument`.
_NO_VALUE = re.compile(r"argument (\S+): expected one argument")


def _dash_value_hint(message: str, given: Sequence[str]) -> str:
    """For an option whose value starts with `-` (`--perturb -1,0,0,0,0,0`, `--origin -1,2,3`):
    how to write it. argparse reads such a value as another option (only a plain negative
    number passes as a value) and says the option was given none, which left the user to
    guess; empty for any other message."""
    found = _NO_VALUE.fullmatch(message)
    if found is None:
        return ""
    options = found.group(1).split("/")
    for word, value in itertools.pairwise(given):
        # argparse also takes a long option's unambiguous abbreviation (`--pert`).
        named = word in options or (
            word.startswith("--") and any(o.startswith(word) for o in options)
        )
        if named and value.startswith("-") and value != "-":
            return f" (a value that starts with '-' is joined to its option: {word}={value})"
    return ""


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def distance_m(text: str) -> float:
    """A distance > 0 and at most `MAX_RANGE_M` (the config's bound on a range), m: 1e308 m
    matched every detection with any reference."""
    value = positive_float(text)
    if value > MAX_RANGE_M:
        raise argparse.ArgumentTypeError(f"{text} m is above {MAX_RANGE_M:.0f} m")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return value


def _at_most_seconds(text: str, value: float) -> float:
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} s is above {MAX_SECONDS:.0f} s (11.6 days)")
    return value


def positive_seconds(text: str) -> float:
    """A duration > 0 and at most `MAX_SECONDS`, s."""
    return _at_most_seconds(text, positive_float(text))


def non_negative_seconds(text: str) -> float:
    """A duration >= 0 and at most `MAX_SECONDS`, s."""
    return _at_most_seconds(text, non_negative_float(text))


def rate_hz(text: str) -> float:
    """A rate > 0 whose period is at most `MAX_SECONDS`, and at most `MAX_RATE_HZ`, Hz."""
    value = positive_float(text)
    if value > MAX_RATE_HZ:
        # What is played is made per period: a billion sweeps a second never ends.
        raise argparse.ArgumentTypeError(f"{text} Hz is above {MAX_RATE_HZ:.0f} Hz")
    if value < 1.0 / MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} Hz is below {1.0 / MAX_SECONDS:g} Hz (one every {MAX_SECONDS:.0f} s)"
        )
    return value


#: The slowest a drive is played: a millionth of recorded time (slower, a tenth of a second
#: between two messages is a wait beyond what the platform's timers take).
MIN_SPEED = 1e-6


def speed_factor(text: str) -> float:
    """0 (as fast as possible) or a factor of recorded time from `MIN_SPEED` up."""
    value = non_negative_float(text)
    if 0 < value < MIN_SPEED:
        raise argparse.ArgumentTypeError(
            f"{text} is below {MIN_SPEED:g} (a millionth of recorded time); 0 plays as fast as "
            "possible"
        )
    return value


def int_at_most(most: int) -> Callable[[str], int]:
    """An integer from 1 to `most`."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"{text} is above {most:,}")
        return value

    return parse


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return value


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port)."""
    value = int(_number(text, int))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0-65535)")
    return value


#: The largest rotation (degrees) and translation (centimetres) `correction_arg` takes.
MAX_PERTURB_DEG = 10.0
MAX_PERTURB_CM = 100.0


def correction_arg(text: str) -> tuple[float, float, float, float, float, float]:
    """Six comma-separated numbers: degrees about the vehicle's x, y, z, then centimetres along
    them; returned as degrees and metres."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 6:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give six comma-separated numbers: roll,pitch,yaw (deg),x,y,z (cm)"
        )
    values = [_number(p, float) for p in parts]
    if any(abs(v) > MAX_PERTURB_DEG for v in values[:3]):
        raise argparse.ArgumentTypeError(
            f"{text!r}: rotations must be within +-{MAX_PERTURB_DEG:g} deg"
        )
    if any(abs(v) > MAX_PERTURB_CM for v in values[3:]):
        raise argparse.ArgumentTypeError(
            f"{text!r}: translations must be within +-{MAX_PERTURB_CM:g} cm"
        )
    d = values[:3]
    m = [v / 100.0 for v in values[3:]]
    return d[0], d[1], d[2], m[0], m[1], m[2]


def fusion_kinds(text: str) -> tuple[str, ...]:
    """Comma-separated fusion kinds (`perception.config.FUSION_KINDS`), or `all`."""
    from perception.config import FUSION_KINDS  # noqa: PLC0415 - light, but only when parsed

    if text.strip() == "all":
        return FUSION_KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in FUSION_KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose among {', '.join(FUSION_KINDS)} (comma-separated) or all"
        )
    return kinds
