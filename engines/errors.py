"""Errors of the engines package."""

from __future__ import annotations

__all__ = ["EngineError", "ModelError"]


class EngineError(Exception):
    """An engine could not be created or run; the message names the model and the problem."""


class ModelError(EngineError):
    """A model file is missing, unreadable or not what the registry says it is."""
