"""Errors of the replay package."""

from __future__ import annotations

from perception.errors import SourceError

__all__ = ["ReplayError"]


class ReplayError(SourceError):
    """A recorded drive or dataset folder cannot be read; the message names the path."""
