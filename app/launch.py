"""The `perception` console script: `app.cli.main`, imported under the same care for SIGINT.

Importing the command line takes a few tenths of a second (numpy, OpenCV, ZeroMQ, ONNX Runtime
are imported at its top). A Ctrl-C in that time arrived before `app.cli.main` catches it, and
printed a traceback of whatever was being imported; here it is one line and exit 130, as
during a command."""

from __future__ import annotations

import sys

__all__ = ["main"]


#: app.cli.EXIT_INTERRUPTED, which may not be imported yet.
_EXIT_INTERRUPTED = 130


def main() -> int:
    try:
        from app.cli import main as cli_main  # noqa: PLC0415 (what the interrupt may land in)

        # An interrupt while the arguments are parsed, before the command's own handling.
        return cli_main()
    except KeyboardInterrupt:
        print("perception: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
