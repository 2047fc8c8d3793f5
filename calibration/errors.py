"""Errors of the calibration package."""

from __future__ import annotations

import os
import reprlib
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_TEXT_BYTES",
    "CalibrationError",
    "load_yaml",
    "not_utf8",
    "read_text",
    "shown",
]

#: The largest text file (calibration, config, timestamps, labels) `read_text` reads.
MAX_TEXT_BYTES = 64 << 20


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


def not_utf8(e: UnicodeDecodeError, offset: int = 0) -> str:
    """`not UTF-8 text (byte 0xff at offset 12)`: a decode failure said the same way for every
    text file the project reads. `offset` is where in the file the decoded bytes began, so the
    offset shown is the file's, not the chunk's."""
    return f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {offset + e.start})"


def read_text(path: Path, what: str, error: Callable[[str], Exception] = CalibrationError) -> str:
    """The UTF-8 text of a file a user gave (a calibration, config or dataset text file).

    Every package reads such files, and a binary one given by mistake must fail as a malformed
    file of that package does, so the package's own error type is `error`.

    Raises:
        error: `"PATH: cannot read WHAT (reason)"` when the file cannot be read, or
            `"PATH: not UTF-8 text (byte 0xff at offset N)"` when it is not UTF-8.
    """
    try:
        # Opened without blocking: a FIFO with no writer would block the open itself.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            # A device or pipe never ends (/dev/zero), or holds no file.
            if not stat.S_ISREG(st.st_mode):
                raise error(f"{path}: {what} is not a regular file (a device, pipe or socket)")
            if st.st_size > MAX_TEXT_BYTES:
                raise error(
                    f"{path}: {what} is {st.st_size} bytes, larger than the {MAX_TEXT_BYTES >> 20} "
                    "MiB a text file of this kind may be"
                )
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from e
    try:
        # Decoded whole, not through a text stream, so the offset reported is the file's.
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: {not_utf8(e)}") from e


def load_yaml(
    text: str, where: str | Path, invalid: str, error: Callable[[str], Exception] = CalibrationError
) -> Any:
    """`yaml.safe_load` of a user's file, whatever PyYAML cannot take said in one line:
    `"WHERE: INVALID (the parser's message)"`, `"WHERE: INVALID (nests too deep)"`, or
    `"WHERE: INVALID value (...)"` for a scalar Python refuses to convert.

    Raises:
        error: as above.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{where}: {invalid} ({' '.join(str(e).split())})") from e
    except RecursionError:
        # PyYAML composes nested collections recursively: thousands of `[` exhaust the stack.
        raise error(f"{where}: {invalid} (nests too deep)") from None
    except ValueError as e:
        # PyYAML converts scalars with Python's int() and datetime(), which refuse some values
        # (a 31st of February, an integer of more digits than Python converts).
        problem = str(e).split(";")[0]
        if "integer string conversion" in problem:
            problem = f"an integer of more than {sys.get_int_max_str_digits()} digits"
        raise error(f"{where}: {invalid} value ({problem})") from None
