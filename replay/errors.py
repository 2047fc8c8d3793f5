"""Errors of the replay package."""

from __future__ import annotations

from perception.errors import SourceError

__all__ = ["DamagedDriveError", "DriveStorageError", "ReplayError", "messages_lost"]


class ReplayError(SourceError):
    """A recorded drive or dataset folder cannot be read; the message names the path."""


class DriveStorageError(ReplayError):
    """A drive's file cannot be written (disk full, file size limit, I/O error). The writer is
    unusable afterwards; the file holds every chunk that reached it and reads as a truncated
    drive. The message names the path and the operating system's error."""


class DamagedDriveError(ReplayError):
    """Part of a drive cannot be read (a chunk whose bytes are damaged); the message names the
    path, where the damage lies and what it held. `messages_lost`: how many messages it held
    (1 where its index is damaged too and the count is unknown)."""

    def __init__(self, message: str, messages_lost: int) -> None:
        super().__init__(message)
        self.messages_lost = messages_lost


def messages_lost(error: Exception) -> int:
    """How many recorded messages an error of reading a drive cost: a damaged chunk's count, 1
    for one message that cannot be decoded."""
    return error.messages_lost if isinstance(error, DamagedDriveError) else 1
