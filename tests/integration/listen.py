"""What a node publishes, collected on a thread with the host time each message arrived."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, Diagnostics


class Outputs:
    """Subscribes to `detections` and `diagnostics` at `endpoint` on a thread of its own (a
    socket belongs to one thread) until closed; `detections` and `diagnostics` hold
    (host receive time ns, message) in arrival order."""

    def __init__(self, endpoint: str) -> None:
        self.detections: list[tuple[int, DetectionList]] = []
        self.diagnostics: list[tuple[int, Diagnostics]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint,), daemon=True)
        self._thread.start()
        self._ready.wait(10.0)

    def _run(self, endpoint: str) -> None:
        with Subscriber([endpoint], ["detections", "diagnostics"]) as sub:
            self._ready.set()
            while not self._stop.is_set():
                frames = sub.recv(timeout_ms=20)
                if frames is None:
                    continue
                now = time.time_ns()
                _, msg = wire.decode(frames)
                with self._lock:
                    if isinstance(msg, DetectionList):
                        self.detections.append((now, msg))
                    elif isinstance(msg, Diagnostics):
                        self.diagnostics.append((now, msg))

    def wait_for(
        self, accept: Callable[[Outputs], bool], timeout_s: float, what: str = "condition"
    ) -> None:
        """Until `accept(self)` holds; AssertionError naming `what` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if accept(self):
                    return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def last_diagnostics(self) -> Diagnostics:
        with self._lock:
            assert self.diagnostics, "no diagnostics from the node"
            return self.diagnostics[-1][1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> Outputs:
        # The receive times are this process's: in a whole test run its heap holds what every
        # earlier test left, and a full garbage collection pass over it stalls the receiving
        # thread for 100 ms and more (a fresh-clone run measured 110-130 ms late arrivals the
        # node's own latency did not show). Frozen, collections skip that heap.
        gc.collect()
        gc.freeze()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        gc.unfreeze()
