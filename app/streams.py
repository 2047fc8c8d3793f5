"""What the commands print must never fail on what it names.

A file name that is not UTF-8 (a folder named in another encoding) reaches Python as text with
lone surrogates (PEP 383), which a UTF-8 stream refuses: `keys generate --out` into such a
folder wrote the keys and then failed printing where, exit 1. And a stream of a narrower
encoding (`PYTHONIOENCODING=ascii`, a pipe under an old locale) refuses a name's accented
letters. `print_anything` sets an error handler on stdout and stderr that writes a surrogate
back as the byte it stood for (the name as the file system holds it, as `ls` shows it) and
anything else the stream cannot encode as a backslash escape.
"""

from __future__ import annotations

import codecs
import io
import sys

__all__ = ["print_anything"]

_HANDLER = "perception-print"


def _write_through(error: UnicodeError) -> tuple[str | bytes, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in bad):
        return bytes(ord(c) - 0xDC00 for c in bad), error.end
    return codecs.backslashreplace_errors(error)


def print_anything() -> None:
    """Sets the handler (see the module docstring) on `sys.stdout` and `sys.stderr` where they
    are text streams that can take it."""
    try:
        codecs.lookup_error(_HANDLER)
    except LookupError:
        codecs.register_error(_HANDLER, _write_through)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=_HANDLER)
