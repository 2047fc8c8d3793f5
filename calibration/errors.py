"""Errors of the calibration package."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["CalibrationError", "shown"]


class CalibrationError(Exception):
    """A calibration file or value is invalid; the message names the file, field and problem."""


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 8


def shown(value: Any) -> str:
    """`repr(value)` cut to a few lines, for error messages: a rig document may hold anything
    (a list nested 1,000 deep, a 4 MB string), and neither may make the error itself fail
    (`repr` recurses per level) or flood the log."""
    try:
        return _REPR.repr(value)
    except Exception:  # a value whose repr fails must not replace the error being reported
        return f"<{type(value).__name__}>"
