"""Errors raised by the perception package. One base class; every message names its input."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PerceptionError",
    "SchemaError",
    "SourceError",
    "StalePayloadError",
    "TransportError",
    "WireError",
]


class PerceptionError(Exception):
    """Base class of every error raised by the perception package."""


class WireError(PerceptionError):
    """A wire message could not be encoded or decoded; the message names the stream and fault."""

    def __init__(self, stream: str, problem: str) -> None:
        super().__init__(f"{stream}: {problem}")
        self.stream = stream
        self.problem = problem


class StalePayloadError(WireError):
    """A message whose payload lay in shared memory that its writer recycled before the reader
    was done with it (perception.io.shm): dropped and counted, not undecodable."""


class SchemaError(PerceptionError):
    """A message or its JSON document does not follow the message schema
    (perception.msgs.schema); the message names the stream (when known) and the fault."""

    def __init__(self, stream: str, problem: str) -> None:
        super().__init__(f"{stream}: {problem}")
        self.stream = stream
        self.problem = problem


class TransportError(PerceptionError):
    """A ZeroMQ endpoint could not be bound, connected or used."""


class ConfigError(PerceptionError):
    """A configuration file or value is invalid; the message names the file and key."""


class SourceError(PerceptionError):
    """A data source (dataset folder, recorded drive) is missing or unreadable."""
