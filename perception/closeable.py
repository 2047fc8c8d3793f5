"""`with` support for objects that own resources released by `close()` (sockets, files, child
processes)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Closeable"]


class Closeable(ABC):
    """Leaving a `with` block calls `close()`."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object owns; safe to call more than once."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
