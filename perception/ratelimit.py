"""Logging at a bounded rate: per-message problems must not flood the log."""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimitedLogger"]


class RateLimitedLogger:
    """Logs each `key` at most once per `interval_s`; the next line says how many were held."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self.logger = logger
        self.interval_ns = int(interval_s * 1e9)
        self._last_ns: dict[str, int] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged within the interval; True if it was logged."""
        now = time.monotonic_ns()
        last = self._last_ns.get(key)
        if last is not None and now - last < self.interval_ns:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        suffix = f" ({held} similar messages suppressed)" if held else ""
        self.logger.warning("%s%s", message, suffix)
        self._last_ns[key] = now
        return True
