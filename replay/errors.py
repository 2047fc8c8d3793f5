"""Errors of the replay package."""

from __future__ import annotations

from perception.errors import SourceError

__all__ = ["DriveStorageError", "ReplayError"]


class ReplayError(SourceError):
    """A recorded drive or dataset folder cannot be read; the message names the path."""


class DriveStorageError(ReplayError):
    """A drive's file cannot be written (disk full, file size limit, I/O error). The writer is
    unusable afterwards; the file holds every chunk that reached it and reads as a truncated
    drive. The message names the path and the operating system's error."""
