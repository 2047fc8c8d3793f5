"""Logging at a bounded rate: per-message problems must not flood the log, nor grow memory.

The keys name where a problem came from, often a stream or topic a sender chose: a hostile
sender inventing a new topic per message must not grow the table of keys without bound (the
fuzzer found the node's memory growing with every new topic), nor fill the log with lines
megabytes long.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

__all__ = ["MAX_KEY_CHARS", "MAX_MESSAGE_CHARS", "OVERFLOW_KEY", "RateLimitedLogger"]

#: Keys are cut to this many characters.
MAX_KEY_CHARS = 200
#: Messages are cut to this many characters.
MAX_MESSAGE_CHARS = 2000
#: The key new keys share while the table is full.
OVERFLOW_KEY = "<other keys>"


class RateLimitedLogger:
    """Logs each `key` at most once per `interval_s`; the next line says how many were held.

    At most `max_keys` keys are tracked: when a new key finds the table full, the keys not
    logged for an interval are forgotten (their next line would be logged anyway; what they held
    is dropped), and if none is, the new key shares `OVERFLOW_KEY` with the others that find
    it full. Keys are cut to `MAX_KEY_CHARS`, messages to `MAX_MESSAGE_CHARS`.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0, max_keys: int = 1024):
        self.logger = logger
        self.interval_ns = int(interval_s * 1e9)
        self.max_keys = max_keys
        # Oldest logged first: idle keys are forgotten from the front.
        self._last_ns: OrderedDict[str, int] = OrderedDict()
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged within the interval; True if it was logged."""
        now = time.monotonic_ns()
        key = key[:MAX_KEY_CHARS]
        if key not in self._last_ns and len(self._last_ns) >= self.max_keys:
            self._forget_idle(now)
            if len(self._last_ns) >= self.max_keys:
                key = OVERFLOW_KEY
        last = self._last_ns.get(key)
        if last is not None and now - last < self.interval_ns:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        suffix = f" ({held} similar messages suppressed)" if held else ""
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... ({len(message)} characters)"
        self.logger.warning("%s%s", message, suffix)
        self._last_ns[key] = now
        self._last_ns.move_to_end(key)
        return True

    def _forget_idle(self, now_ns: int) -> None:
        while self._last_ns:
            key, last = next(iter(self._last_ns.items()))
            if now_ns - last < self.interval_ns:
                return
            del self._last_ns[key]
            self._held.pop(key, None)

    def __len__(self) -> int:
        """Keys tracked now."""
        return len(self._last_ns)
