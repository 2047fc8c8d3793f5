"""The live view's gate: what foxglove-sdk's WebSocket server cannot bound, bounded in front of it.

The SDK (0.30) has no setting for how many clients it serves, how long a connection may take to
open, nor how large a message a client may send (64 MiB each), and its Python API can neither
see a client connect nor close one. So the view (perception.node.view) listens on the
configured address itself and a `Gate` relays each viewer to the SDK's server, bound on an
ephemeral loopback port: at most `MAX_VIEW_CLIENTS` at once (one more is refused and counted),
each given `HANDSHAKE_TIMEOUT_S` to send its upgrade request (of at most `MAX_REQUEST_BYTES`),
its messages at most `MAX_CLIENT_MESSAGE_BYTES`. The gate is Python, which the node's threads
wait for (the GIL), so what hostile clients can make it do is paced too: `ACCEPTS_PER_S`
connections, `CLIENT_BYTES_PER_S` of the viewers' messages (a viewer sends a few
subscriptions). What the server sends passes through untouched (~1 ms of CPU, mostly the
kernel's copies, a 1.7 MB frame a viewer), the SDK's per-client backlog still dropping the
oldest for a client that does not read. A process on the same machine can still reach the
SDK's loopback port directly.

The SDK's own log lines (pyo3-log, on the `foxglove.*` loggers) reach the root logger's
handlers at a bounded rate (`SdkLines`, put in place by `gate_sdk_lines`): 50 viewers leaving
at once had logged 1,373 lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from perception.ratelimit import RateLimitedLogger

__all__ = [
    "ACCEPTS_PER_S",
    "CLIENT_BYTES_PER_S",
    "HANDSHAKE_TIMEOUT_S",
    "LOOPBACK",
    "MAX_CLIENT_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_VIEW_CLIENTS",
    "Gate",
    "SdkLines",
    "gate_sdk_lines",
    "lower_priority",
]

log = logging.getLogger("perception.view")

#: Viewers connected (or connecting) at once; one more is closed at once (counted). Each
#: costs the node the SDK's sends to it and up to `CLIENT_BACKLOG_MESSAGES` held for it
#: (50 that never read held 32 frames each); 60 were served before.
MAX_VIEW_CLIENTS = 8
#: How long a connection may take to send its WebSocket upgrade request, s (none was held
#: for ever); a slot of `MAX_VIEW_CLIENTS` is held meanwhile.
HANDSHAKE_TIMEOUT_S = 5.0
#: The upgrade request's most bytes (headers included; the Foxglove app sends under 1 KiB).
MAX_REQUEST_BYTES = 16 * 1024
#: A viewer's largest message (frames continued included): the SDK held up to 64 MiB of an
#: unfinished one per client (5 clients took 330-380 MB). A viewer sends subscriptions (30 bytes
#: a channel).
MAX_CLIENT_MESSAGE_BYTES = 1024 * 1024
#: What the viewers' messages are read at, all of them together, bytes/s, after a first
#: `_CLIENT_BURST_BYTES`: the frame check is Python (4.4 us a frame of 6 bytes), which the
#: node's threads wait for (the GIL), so viewers of tiny frames must not be read as fast as
#: they send. A viewer sends a few subscriptions.
CLIENT_BYTES_PER_S = 8 * 1024
_CLIENT_BURST_BYTES = 64 * 1024
#: Connections accepted a second, after a first `_ACCEPT_BURST` (more wait in the kernel's
#: backlog): each costs the gate's Python ~0.5 ms; a connect flood had slowed the node's
#: Python by a third (the SDK alone, in Rust, by nothing).
ACCEPTS_PER_S = 20.0
_ACCEPT_BURST = 20
# Relay buffers: the server's messages (images, points) in chunks of this, a viewer's in 4 KiB;
# the loopback socket's receive buffer is fixed (no autotuning to 32 MB), so what a slow
# viewer leaves waiting stays in the SDK's backlog, where the oldest is dropped.
_RELAY_CHUNK_BYTES = 256 * 1024
_UPSTREAM_RCVBUF_BYTES = 1024 * 1024
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 17\r\n\r\n"
    b"too many viewers\n"
)
#: The loggers the SDK's lines arrive on (pyo3-log names one after each Rust module).
_SDK_LOGGERS = ("foxglove", "tungstenite", "tokio_tungstenite")
# Kinds of SDK lines tracked (addresses and numbers do not make a new kind).
_SDK_LOG_KEYS = 64
_NUMBERS = re.compile(r"\d+")
_SDK_LINES_LOCK = threading.Lock()
LOOPBACK = "127.0.0.1"
#: How often a thread blocked in accept looks at whether the gate is closing, s.
_WAKE_S = 0.5


def lower_priority(nice: int) -> None:
    """Makes the calling thread `nice` nicer than it is (Linux schedules threads, each with
    its own nice value; elsewhere, or where refused, the thread keeps the node's priority)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(current + nice, 19))
    except OSError as e:
        log.info("view: the view's threads keep the node's priority (%s)", e)


class _Pace:
    """At most `rate` units a second, after a first `burst`, for every thread that takes from
    it together (GCRA: each take books the time its units need after those booked before)."""

    def __init__(self, rate: float, burst: int) -> None:
        self._ns_per_unit = 1e9 / rate
        self._burst_ns = int(burst * self._ns_per_unit)
        self._booked_ns = 0  # when what was taken so far will have been paid for
        self._lock = threading.Lock()

    def take(self, units: int) -> float:
        """Books `units`; the seconds the caller waits before it goes on (0: none)."""
        with self._lock:
            now_ns = time.monotonic_ns()
            self._booked_ns = max(self._booked_ns, now_ns) + int(units * self._ns_per_unit)
            return max(self._booked_ns - now_ns - self._burst_ns, 0) * 1e-9


class _MessageTooLargeError(Exception):
    """A viewer's frame or message declared more than `MAX_CLIENT_MESSAGE_BYTES`."""


class _FrameSizes:
    """Follows the WebSocket frames a viewer sends (RFC 6455 5.2: headers read, payloads
    skipped) and raises _MessageTooLargeError when a frame, or the frames of one message, declare
    more than `limit` bytes: at the header, before its payload is relayed to the SDK."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._header = bytearray()
        self._payload_left = 0
        self._message_bytes = 0

    def feed(self, data: bytes | memoryview) -> None:
        i, size = 0, len(data)
        while i < size:
            if self._payload_left:
                step = min(self._payload_left, size - i)
                self._payload_left -= step
                i += step
                continue
            self._header.append(data[i])
            i += 1
            self._parse_header()

    def _parse_header(self) -> None:
        header = self._header
        if len(header) < 2:
            return
        short = header[1] & 0x7F
        extended = 2 if short == 126 else 8 if short == 127 else 0
        if len(header) < 2 + extended + (4 if header[1] & 0x80 else 0):
            return
        length = int.from_bytes(header[2 : 2 + extended], "big") if extended else short
        final, opcode = header[0] & 0x80, header[0] & 0x0F
        header.clear()
        total = length
        # Data frames add up to a message; control frames (ping, close) may come between its
        # frames, each on its own.
        if opcode < 8:
            continued = self._message_bytes if opcode == 0 else 0
            total = self._message_bytes = continued + length
            if final:
                self._message_bytes = 0
        if total > self.limit:
            raise _MessageTooLargeError(total)
        self._payload_left = length


def _shutdown(sock: socket.socket | None) -> None:
    """Ends both directions of `sock` (a thread blocked on it returns); it stays open."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _address(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


class Gate:
    """Accepts viewers on the view's address and relays each to the SDK's server on
    `upstream_port` (loopback), within the limits of the module docstring.

    Blocking sockets, two threads a viewer (one each way) and one accepting: at most
    1 + 2 * `MAX_VIEW_CLIENTS` threads, each asleep in a system call (the GIL released) but
    for its Python between two chunks.
    """

    def __init__(
        self, listener: socket.socket, upstream_port: int, count: Callable[[str], None]
    ) -> None:
        self._listener = listener
        self._upstream = (LOOPBACK, upstream_port)
        self.port = int(listener.getsockname()[1])
        self._count = count
        self._slots = threading.BoundedSemaphore(MAX_VIEW_CLIENTS)
        self._stop = threading.Event()
        # Every socket open and every viewer's thread: `close` ends them.
        self._open: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._open_lock = threading.Lock()
        self._bad = RateLimitedLogger(log)
        self._bad_lock = threading.Lock()
        self._accepts = _Pace(ACCEPTS_PER_S, _ACCEPT_BURST)
        self._client_bytes = _Pace(CLIENT_BYTES_PER_S, _CLIENT_BURST_BYTES)
        self._thread: threading.Thread | None = None

    def start(self, nice: int) -> None:
        # Linux threads inherit their creator's nice value: the viewers' threads, started by
        # this one, run as nice as it does.
        def run() -> None:
            lower_priority(nice)
            self._accept()

        # A timeout, so that the loop sees `close` wherever closing a socket wakes no accept.
        self._listener.settimeout(_WAKE_S)
        self._thread = threading.Thread(target=run, name="view-gate", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float) -> None:
        self._stop.set()
        _shutdown(self._listener)
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._listener.close()
        with self._open_lock:
            for sock in self._open:
                _shutdown(sock)
            threads = list(self._threads)
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def _warn(self, key: str, message: str) -> None:
        with self._bad_lock:
            self._bad.warning(key, message)

    def _accept(self) -> None:
        while not self._stop.is_set():
            wait_s = self._accepts.take(1)
            if wait_s and self._stop.wait(wait_s):
                return
            try:
                client, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as e:  # closed; or out of descriptors: wait, not spin
                if self._stop.is_set():
                    return
                self._warn("accept", f"view: cannot accept a viewer: {e}")
                self._stop.wait(_WAKE_S)
                continue
            if not self._slots.acquire(blocking=False):
                self._count("refused_clients")
                self._warn(
                    "refused",
                    f"view: a viewer refused ({_address(address)}): "
                    f"{MAX_VIEW_CLIENTS} are connected",
                )
                client.setblocking(False)
                with contextlib.suppress(OSError):
                    client.send(_BUSY_RESPONSE)
                client.close()
                continue
            thread = threading.Thread(
                target=self._serve, args=(client, address), name="view-viewer", daemon=True
            )
            with self._open_lock:
                self._open.add(client)
                self._threads.add(thread)
            try:
                thread.start()
            except RuntimeError as e:  # no thread to be had: this viewer goes
                self._warn("accept", f"view: cannot serve a viewer: {e}")
                self._release(thread, client)

    def _release(self, thread: threading.Thread, *socks: socket.socket | None) -> None:
        with self._open_lock:
            self._threads.discard(thread)
            for sock in socks:
                if sock is not None:
                    self._open.discard(sock)
                    sock.close()
        self._slots.release()

    def _serve(self, client: socket.socket, address: Any) -> None:
        """One viewer: its upgrade request read here, then relayed both ways until either
        side closes; its slot released at the end."""
        upstream: socket.socket | None = None
        pump: threading.Thread | None = None
        try:
            request = self._request(client, address)
            if request is None or self._stop.is_set():
                return
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UPSTREAM_RCVBUF_BYTES)
            with self._open_lock:
                self._open.add(upstream)
            upstream.settimeout(HANDSHAKE_TIMEOUT_S)
            upstream.connect(self._upstream)
            upstream.settimeout(None)
            head, early = request
            frames = _FrameSizes(MAX_CLIENT_MESSAGE_BYTES)
            frames.feed(early)
            upstream.sendall(head + early)
            pump = threading.Thread(
                target=self._pump, args=(upstream, client), name="view-viewer", daemon=True
            )
            pump.start()
            self._forward(client, upstream, frames)
        except _MessageTooLargeError as e:
            self._count("oversized_clients")
            self._warn(
                "oversized",
                f"view: a viewer closed ({_address(address)}): a message of {e} bytes, "
                f"over {MAX_CLIENT_MESSAGE_BYTES}",
            )
        except (OSError, RuntimeError):  # the viewer or the server gone, the view closing
            pass
        finally:
            _shutdown(client)
            _shutdown(upstream)
            if pump is not None:
                pump.join(HANDSHAKE_TIMEOUT_S)
            self._release(threading.current_thread(), client, upstream)

    def _request(self, client: socket.socket, address: Any) -> tuple[bytes, bytes] | None:
        """The viewer's upgrade request (to the blank line) and what followed it; None, the
        viewer counted and logged, when it took over `HANDSHAKE_TIMEOUT_S` or
        `MAX_REQUEST_BYTES` (or left)."""
        deadline_ns = time.monotonic_ns() + int(HANDSHAKE_TIMEOUT_S * 1e9)
        data = bytearray()
        while (end := data.find(b"\r\n\r\n")) < 0:
            if len(data) > MAX_REQUEST_BYTES:
                self._count("oversized_clients")
                self._warn(
                    "oversized",
                    f"view: a viewer closed ({_address(address)}): a request over "
                    f"{MAX_REQUEST_BYTES} bytes",
                )
                return None
            left_ns = deadline_ns - time.monotonic_ns()
            try:
                if left_ns <= 0:
                    raise TimeoutError
                client.settimeout(left_ns * 1e-9)
                chunk = client.recv(4096)
            except TimeoutError:
                self._count("timed_out_clients")
                self._warn(
                    "handshake",
                    f"view: a viewer closed ({_address(address)}): no WebSocket handshake "
                    f"in {HANDSHAKE_TIMEOUT_S:g} s",
                )
                return None
            if not chunk:
                return None
            data += chunk
        client.settimeout(None)
        end += 4
        return bytes(data[:end]), bytes(data[end:])

    def _forward(self, client: socket.socket, upstream: socket.socket, frames: _FrameSizes) -> None:
        """The viewer's bytes to the server, each frame checked first, read at the viewers'
        pace (`CLIENT_BYTES_PER_S`)."""
        buffer = bytearray(4096)
        view = memoryview(buffer)
        while count := client.recv_into(buffer):
            frames.feed(view[:count])
            upstream.sendall(view[:count])
            wait_s = self._client_bytes.take(count)
            if wait_s and self._stop.wait(wait_s):
                return

    @staticmethod
    def _pump(upstream: socket.socket, client: socket.socket) -> None:
        """The server's bytes to the viewer as they are; a viewer that does not read blocks
        this thread only (the SDK keeps, then drops, what waits for it)."""
        buffer = bytearray(_RELAY_CHUNK_BYTES)
        view = memoryview(buffer)
        try:
            while count := upstream.recv_into(buffer):
                client.sendall(view[:count])
        except OSError:
            pass
        finally:  # the other direction ends too
            _shutdown(client)
            _shutdown(upstream)


# -- the SDK's log lines ----------------------------------------------------------------------


class SdkLines(logging.Handler):
    """On the SDK's loggers (which then do not propagate): hands each record on to the root
    logger's handlers unless a line of its kind (logger, level, text but its numbers: the
    addresses) went within RateLimitedLogger's interval; the next one says how many were held.

    A filter on the `foxglove` logger would not see the records of its children (pyo3-log logs
    each on the logger of its Rust module), a handler there does. Records keep their level
    and logger name (RateLimitedLogger's line goes back through `_Forward`).
    """

    def __init__(self) -> None:
        super().__init__()
        self._record: logging.LogRecord | None = None
        self._limiter = RateLimitedLogger(_Forward(self._hand_on), max_keys=_SDK_LOG_KEYS)

    def emit(self, record: logging.LogRecord) -> None:
        # The SDK's threads log holding the GIL; `handle` holds this handler's lock.
        try:
            text = record.getMessage()
            self._record = record
            key = f"{record.name}:{record.levelno}:{_NUMBERS.sub('#', text)}"
            self._limiter.warning(key, text)
        except Exception:
            self.handleError(record)
        finally:
            self._record = None

    def _hand_on(self, text: str) -> None:
        record = self._record
        if record is not None:
            record.msg, record.args = text, None
            logging.getLogger().handle(record)


class _Forward(logging.Logger):
    """The logger RateLimitedLogger writes to for `SdkLines`: its `warning` hands the line
    (with the count of those held) to `hand_on`, which logs it as the SDK's record."""

    def __init__(self, hand_on: Callable[[str], None]) -> None:
        super().__init__("perception.view.sdk")
        self._hand_on = hand_on

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._hand_on(str(msg) % args if args else str(msg))


def gate_sdk_lines() -> None:
    """Puts one `SdkLines` on the SDK's loggers, once a process (the SDK's logging is the
    process's: pyo3-log is set up once)."""
    with _SDK_LINES_LOCK:
        first = logging.getLogger(_SDK_LOGGERS[0])
        gate = next((h for h in first.handlers if isinstance(h, SdkLines)), None)
        gate = gate or SdkLines()
        for name in _SDK_LOGGERS:
            logger = logging.getLogger(name)
            if gate not in logger.handlers:
                logger.addHandler(gate)
            logger.propagate = False
