"""The node under test, seen from outside: `perception run` as a child process, its published
DetectionLists and diagnostics frames, and its CPU and memory use.

The bench relies only on what the node publishes: its sockets, the DetectionList fields
(`header.stamp_ns`, `timings_ns`, `latency_ns`, `degraded`) and its Diagnostics messages
(kept as their JSON documents: `header.stamp_ns`, `counters.skipped_bundles`, `engines`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from app.bench.settings import BenchInterruptedError

# The transport's `with` base (leaving the block calls `close`): the same contract here.
from perception.closeable import Closeable
from perception.errors import PerceptionError, WireError
from perception.io.transport import ReceivedFrame, Subscriber
from perception.msgs import wire
from perception.msgs.jsonl import to_document
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits
from perception.msgs.types import DetectionList, Diagnostics

__all__ = ["Answer", "Collector", "NodeChild", "UsageSampler"]

#: Runs `python ARGS...` (argv[2:]) in a process the kernel sends SIGTERM when the process
#: that started it (argv[1], its pid) ends, however it ends: PR_SET_PDEATHSIG, which outlives
#: the exec. A bench killed by SIGKILL (the OOM killer, a cancelled CI job, `kill -9`) left its
#: node running for ever, holding a core and its sockets; SIGTERM stops the node cleanly.
_ORPHAN_STOPPED = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1: PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"  # the bench died before the prctl: no one to serve
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _node_command(config_path: Path) -> list[str]:
    """The command line of the node child (on Linux, through `_ORPHAN_STOPPED`)."""
    node = ["-m", "app.cli", "run", "--config", str(config_path)]
    if sys.platform != "linux":
        return [sys.executable, *node]
    return [sys.executable, "-c", _ORPHAN_STOPPED, str(os.getpid()), *node]


class NodeChild(Closeable):
    """`perception run --config CONFIG` as a child process. Its output is kept (the last
    lines, for error messages), and all of it written to `log_path` when given (its warnings:
    dropped messages, clock jumps, refused settings). `close` (also on leaving the `with`
    block, whatever happened) stops it: SIGINT, then SIGKILL after `stop_timeout_s`. On Linux
    it also stops (SIGTERM) when the thread that started it ends, the bench killed included:
    start it on the main thread."""

    def __init__(
        self, config_path: Path, stop_timeout_s: float = 10.0, log_path: Path | None = None
    ) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.output: collections.deque[str] = collections.deque(maxlen=30)
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            _node_command(config_path),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        # Closed by the pump once the node's output ends.
        self._log = None if log_path is None else open(log_path, "w", encoding="utf-8")  # noqa: SIM115
        threading.Thread(target=self._pump, name="bench-node-output", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The node's exit code; None while it runs."""
        return self.proc.returncode

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                if self._log is not None:
                    self._log.write(line)
                    self._log.flush()
                if line.startswith("perception run: ready"):
                    self._ready.set()
        finally:
            if self._log is not None:
                self._log.close()

    def tail(self) -> str:
        return " | ".join(list(self.output)[-5:]) or "no output"

    def check_alive(self) -> None:
        """Raises PerceptionError when the node has exited."""
        code = self.proc.poll()
        if code is not None:
            time.sleep(0.1)  # let the pump take its last words
            raise PerceptionError(f"the node {_ended(code)} during the bench: {self.tail()}")

    def wait_ready(self, timeout_s: float, stop: threading.Event) -> None:
        """Until the node says it is ready. Raises PerceptionError (exited, timeout) or
        BenchInterruptedError."""
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.1):
            if stop.is_set():
                raise BenchInterruptedError("interrupted while the node was starting")
            self.check_alive()
            if time.monotonic() > deadline:
                raise PerceptionError(
                    f"the node was not ready after {timeout_s:g} s (a first TensorRT build takes "
                    "minutes: run `perception engines build` first, or give --ready-timeout): "
                    f"{self.tail()}"
                )

    def close(self) -> None:
        """Stop the node (SIGINT, then kill) and wait for it (its code: `returncode`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=self.stop_timeout_s)
            finally:  # also when this wait is interrupted
                if self.proc.poll() is None:
                    self.proc.kill()
        self.proc.wait()


def _ended(code: int) -> str:
    """How a child that `Popen` says ended with `code` ended: a negative code is the signal
    that killed it ("exited with code -9" read as a code of its own)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = f" ({signal.Signals(-code).name})"
    except ValueError:
        name = ""
    return f"was killed by signal {-code}{name}"


@dataclass(frozen=True)
class Answer:
    """One DetectionList as received: its stamp, when it arrived (host ns) and its figures."""

    stamp_ns: int
    received_ns: int
    latency_ns: int
    timings_ns: dict[str, int]
    degraded: bool


class Collector(Closeable):
    """Receives the node's DetectionLists and diagnostics on a thread of its own (which owns
    the SUB socket), from construction until `close`.

    Raises (constructor):
        TransportError: the SUB socket cannot connect.
    """

    def __init__(
        self,
        endpoint: str,
        detections_topic: str,
        diagnostics_topic: str,
        *,
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> None:
        self._endpoint = endpoint
        self._limits = limits
        self._topics = (detections_topic, diagnostics_topic)
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._diagnostics: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-collector", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread (it closes its socket)."""
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        detections, diagnostics = self._topics
        try:
            sub = Subscriber(
                [self._endpoint],
                [detections, diagnostics],
                hwm={detections: 100_000},
                limits=self._limits,
            )
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        with sub:
            while not self._stop.is_set():
                frames = sub.recv(timeout_ms=50)
                if frames is not None:
                    self._file(frames)

    def _file(self, frames: Sequence[ReceivedFrame]) -> None:
        now = time.time_ns()
        try:
            _, msg = wire.decode(frames, self._limits)
        except WireError:
            return
        if isinstance(msg, Diagnostics):
            with self._lock:
                self._diagnostics.append(to_document(msg))
        elif isinstance(msg, DetectionList):
            answer = Answer(
                msg.header.stamp_ns, now, msg.latency_ns, dict(msg.timings_ns), bool(msg.degraded)
            )
            with self._lock:
                self._answers.append(answer)

    def answers(self, start: int = 0) -> list[Answer]:
        """The DetectionLists received, from the `start`-th on."""
        with self._lock:
            return self._answers[start:]

    def count(self) -> int:
        with self._lock:
            return len(self._answers)

    def counters_between(self, start_ns: int, end_ns: int) -> list[tuple[int, dict[str, int]]]:
        """(stamp, counters) of the diagnostics frames stamped in [start_ns, end_ns]."""
        with self._lock:
            docs = list(self._diagnostics)
        out = []
        for doc in docs:
            stamp, counters = int(doc["header"]["stamp_ns"]), doc.get("counters")
            if start_ns <= stamp <= end_ns and isinstance(counters, dict):
                out.append((stamp, {k: int(v) for k, v in counters.items()}))
        return sorted(out, key=lambda item: item[0])

    def diagnostics_after(
        self,
        stamp_ns: int,
        timeout_s: float,
        stop: threading.Event,
        alive: Callable[[], None] | None = None,
    ) -> dict[str, Any] | None:
        """The first diagnostics frame stamped after `stamp_ns` (waits up to `timeout_s`,
        calling `alive` between polls: it raises when the publisher is gone, e.g.
        `NodeChild.check_alive`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                for doc in self._diagnostics:
                    if int(doc["header"]["stamp_ns"]) > stamp_ns:
                        return doc
            if time.monotonic() > deadline:
                return None
            if stop.wait(0.05):
                raise BenchInterruptedError("interrupted")
            if alive is not None:
                alive()


class UsageSampler:
    """CPU (% of one core) and RSS of a process every `period_s`, on a thread, with the host
    wall time of each sample (`timed`)."""

    def __init__(self, pid: int, period_s: float) -> None:
        self._process = psutil.Process(pid)
        self._period_s = period_s
        self._samples: list[tuple[int, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-usage", daemon=True)

    def start(self) -> None:
        try:
            self._process.cpu_percent(None)  # the first call only sets the reference
        except psutil.Error:
            return
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                cpu = float(self._process.cpu_percent(None))
                rss = int(self._process.memory_info().rss)
            except psutil.Error:
                return
            self._samples.append((time.time_ns(), cpu, rss))

    def stop(self) -> list[tuple[float, int]]:
        """Stop sampling; the (CPU %, RSS bytes) samples taken."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        return [(cpu, rss) for _, cpu, rss in self._samples]

    def timed(self) -> list[tuple[int, float, int]]:
        """The samples with their host wall time: (ns, CPU %, RSS bytes)."""
        return list(self._samples)
