"""Errors of the calibration package."""

from __future__ import annotations

__all__ = ["CalibrationError"]


class CalibrationError(Exception):
    """A calibration file or value is invalid; the message names the file, field and problem."""
