"""Whether the hosts of the node's tcp inputs resolve, watched on a thread of its own.

libzmq retries a connect to a host name that does not resolve for ever, without a word: a
misspelt sensor host (`tcp://lidr-host:2368`) read only as "no message since the node started".
The watch looks each host up at start and then every `interval_s`, logs when one stops or starts
resolving, and gives a note for each that does not, which the node puts on its diagnostics.
The node goes on either way: a name server may come up after the node at boot, and libzmq
connects once the name resolves.

Look-ups block (seconds where no name server answers), so they run here, never on the
receiver's or the worker's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from perception.closeable import Closeable
from perception.io.runtime import unresolved_host

__all__ = ["InputHosts"]

log = logging.getLogger("perception.node")

#: How often hosts are looked up again (s): a host that resolves later is noticed within it.
DEFAULT_INTERVAL_S = 30.0


class InputHosts(Closeable):
    """Watches the tcp endpoints among `endpoints` (others are not looked up). `lookup` says why
    an endpoint's host does not resolve (None: it does); tests may give their own resolver."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        lookup: Callable[[str], str | None] = unresolved_host,
    ) -> None:
        self._endpoints = tuple(dict.fromkeys(e for e in endpoints if e.startswith("tcp://")))
        self._interval_s = interval_s
        self._lookup = lookup
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}
        self._stop = threading.Event()
        self._checked = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InputHosts:
        """Start looking up (no thread when no endpoint is tcp)."""
        if not self._endpoints:
            self._checked.set()
        elif self._thread is None:
            self._thread = threading.Thread(target=self._run, name="input-hosts", daemon=True)
            self._thread.start()
        return self

    def wait_checked(self, timeout_s: float) -> bool:
        """Whether every host was looked up once within `timeout_s`."""
        return self._checked.wait(timeout_s)

    def notes(self) -> tuple[str, ...]:
        """One note per input endpoint whose host does not resolve, at the last look-up."""
        with self._lock:
            return tuple(
                f"input {endpoint}: {why}; nothing can arrive from it until it resolves"
                for endpoint, why in self._problems.items()
            )

    def check(self) -> None:
        """Look every host up once, logging each change."""
        for endpoint in self._endpoints:
            why = self._lookup(endpoint)
            with self._lock:
                before = self._problems.get(endpoint)
                if why is None:
                    self._problems.pop(endpoint, None)
                else:
                    self._problems[endpoint] = why
            if why is not None and before is None:
                log.warning("input %s: %s; ZeroMQ keeps trying it", endpoint, why)
            elif why is None and before is not None:
                log.warning("input %s: its host resolves now", endpoint)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._checked.set()
            self._stop.wait(self._interval_s)

    def close(self) -> None:
        """Stop looking up. A look-up under way is not waited for (the thread is a daemon)."""
        self._stop.set()
