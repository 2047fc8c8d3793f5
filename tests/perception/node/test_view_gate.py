"""The live view (perception.node.view) against hostile viewers, over real sockets: how many it
serves, how long a connection may take to open, how large a message a viewer may send, and
how many of the SDK's log lines reach the log. Each limit is one the SDK (foxglove-sdk 0.30)
has no setting for; the view's gate keeps them."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import struct
import time
from types import SimpleNamespace

import pytest

import perception.node.view_gate as gate_module
from perception.config import ViewConfig
from perception.node.view import FoxgloveView, ViewTopics
from perception.node.view_gate import (
    MAX_CLIENT_MESSAGE_BYTES,
    MAX_VIEW_CLIENTS,
    _FrameSizes,
    _MessageTooLargeError,
    _Pace,
)
from tests.foxglove_client import FoxgloveClient

_DEADLINE_S = 5.0


@pytest.fixture
def view():
    with FoxgloveView(ViewConfig(foxglove=True, port=0), ViewTopics()) as v:
        yield v


def _request(protocol: bool = True) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    offer = "Sec-WebSocket-Protocol: foxglove.sdk.v1\r\n" if protocol else ""
    return (
        f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    ).encode()


def _upgrade(port: int) -> tuple[socket.socket, bytes]:
    """A raw WebSocket upgrade; the socket and the status line answered (b"": closed)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=_DEADLINE_S)
    sock.sendall(_request())
    try:
        head = sock.recv(4096)
    except OSError:
        head = b""
    return sock, head.split(b"\r\n")[0]


def _frame_header(opcode: int, length: int, *, final: bool = True) -> bytes:
    """A masked client frame's header (the mask: zeros, so payloads go as they are)."""
    first = (0x80 if final else 0) | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length) + bytes(4)
    if length < 2**16:
        return struct.pack("!BBH", first, 0x80 | 126, length) + bytes(4)
    return struct.pack("!BBQ", first, 0x80 | 127, length) + bytes(4)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (what it sent before is read and dropped)."""
    sock.setblocking(False)
    try:
        while data := sock.recv(65536):
            del data
        return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def _wait(condition, timeout_s: float = _DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_viewers_beyond_max_view_clients_are_refused_and_counted(
    view: FoxgloveView, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK served every client (60 of 60; 50 that never read held 32 frames each): the
    view serves `MAX_VIEW_CLIENTS`, refuses one more at once (counted, logged), and serves a
    new one once a slot is free."""
    held = []
    try:
        for _ in range(MAX_VIEW_CLIENTS):
            sock, status = _upgrade(view.port)
            held.append(sock)
            assert b" 101 " in status, status
        extra, status = _upgrade(view.port)
        held.append(extra)
        assert b" 101 " not in status, "one viewer more than MAX_VIEW_CLIENTS was served"
        assert status in (b"", b"HTTP/1.1 503 Service Unavailable"), status
        _wait(lambda: _closed(extra))
        assert view.stats.refused_clients == 1
        assert "a viewer refused" in caplog.text

        held.pop(0).close()  # a slot frees once its relay sees the viewer gone

        def served() -> bool:
            sock, status = _upgrade(view.port)
            held.append(sock)
            return b" 101 " in status

        _wait(served)
    finally:
        for sock in held:
            sock.close()


def test_a_viewer_gets_handshake_timeout_s_to_open(
    view: FoxgloveView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK held a connection that never completed its WebSocket handshake for ever (20 of
    20 open after 12 s): a silent one, one stopping mid-request and one sending a byte every
    0.1 s (its deadline does not move) are closed after `HANDSHAKE_TIMEOUT_S`, one sending
    more than `MAX_REQUEST_BYTES` of headers at once; then their slots serve a viewer."""
    # Read by each connection as it opens (raising=False: the test runs on a view without).
    monkeypatch.setattr(gate_module, "HANDSHAKE_TIMEOUT_S", 0.5)
    silent, partial, trickle, huge = (
        socket.create_connection(("127.0.0.1", view.port)) for _ in range(4)
    )
    socks = [silent, partial, trickle, huge]
    try:
        partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        huge.sendall(b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 32_000 + b"\r\n")
        request = iter(_request())

        def all_closed() -> bool:
            with contextlib.suppress(OSError, StopIteration):
                trickle.send(bytes([next(request)]))
            return all(_closed(s) for s in socks)

        deadline = time.monotonic() + _DEADLINE_S
        while not all_closed():
            assert time.monotonic() < deadline, [_closed(s) for s in socks]
            time.sleep(0.1)
        stats = view.stats
        assert (stats.timed_out_clients, stats.oversized_clients) == (3, 1)
    finally:
        for sock in socks:
            sock.close()
    with FoxgloveClient(view.url) as client:
        assert client.server_info["op"] == "serverInfo"


def test_a_viewers_message_over_the_limit_closes_it_before_its_payload(
    view: FoxgloveView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK buffered up to 64 MiB of a client's unfinished message (5 such clients: +331 MB):
    a frame declaring more than `MAX_CLIENT_MESSAGE_BYTES`, or a message of frames adding up
    to more, closes the viewer at the header (counted); a viewer's subscriptions pass."""
    one = _upgrade(view.port)[0]
    try:
        one.sendall(_frame_header(0x2, MAX_CLIENT_MESSAGE_BYTES + 1) + bytes(1000))
        _wait(lambda: _closed(one))
    finally:
        one.close()
    # A smaller limit (read as a viewer opens), so that the fragments fit the rate a viewer
    # is read at (raising=False: the test runs on a view without).
    monkeypatch.setattr(gate_module, "MAX_CLIENT_MESSAGE_BYTES", 16 * 1024)
    fragmented = _upgrade(view.port)[0]
    try:
        part = 10 * 1024
        fragmented.sendall(_frame_header(0x2, part, final=False) + bytes(part))
        fragmented.sendall(_frame_header(0x9, 4) + bytes(4))  # a ping between: not counted
        time.sleep(0.2)
        assert not _closed(fragmented)
        fragmented.sendall(_frame_header(0x0, part) + bytes(part))
        _wait(lambda: _closed(fragmented))
        assert view.stats.oversized_clients == 2
    finally:
        fragmented.close()

    with FoxgloveClient(view.url) as client:  # its subscribe message passes

        def subscribed() -> bool:
            client.poll(0.05)
            return all(c.has_sinks() for c, _ in view._channels.values())

        _wait(subscribed)


def test_the_sdks_log_lines_reach_the_log_at_a_bounded_rate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK logs a line per failed handshake, per failed send (50 viewers leaving logged
    1,373): 40 requests it refuses make 40 lines on the `foxglove` loggers, of which the
    root's handlers get the first (its level and logger name kept) and one per interval."""
    # A fresh start: the gate the view installs on the SDK's loggers once a process.
    for name in ("foxglove", "tungstenite", "tokio_tungstenite"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    raw: list[logging.LogRecord] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(record)

    with FoxgloveView(ViewConfig(foxglove=True, port=0), ViewTopics()) as view:
        sdk = logging.getLogger("foxglove")
        counter = Count(logging.ERROR)
        sdk.addHandler(counter)
        try:
            for _ in range(40):  # no foxglove subprotocol: the SDK answers 400 and logs
                with socket.create_connection(("127.0.0.1", view.port)) as sock:
                    sock.sendall(_request(protocol=False))
                    sock.settimeout(_DEADLINE_S)
                    assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
            _wait(lambda: len(raw) >= 40)
        finally:
            sdk.removeHandler(counter)
    assert all("handshake failed" in r.getMessage() for r in raw)
    shown = [r for r in caplog.records if r.name.startswith("foxglove") and r.levelno >= 40]
    assert 1 <= len(shown) <= 3, [r.getMessage() for r in shown]
    assert shown[0].levelno == logging.ERROR and shown[0].name.startswith("foxglove.")
    assert "handshake failed" in shown[0].getMessage()


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_frame_sizes_follow_frames_split_anywhere(chunk: int) -> None:
    """Headers of 2 to 14 bytes, masked or not, split across reads anywhere; a message's
    fragments add up, control frames between them do not; a message of the limit passes."""
    limit = 70_000
    stream = (
        _frame_header(0x1, 100)
        + bytes(100)
        + _frame_header(0x2, 40_000, final=False)
        + bytes(40_000)
        + _frame_header(0x9, 125)  # a ping inside the message
        + bytes(125)
        + _frame_header(0x0, limit - 40_000)
        + bytes(limit - 40_000)
        + struct.pack("!BBQ", 0x82, 127, limit)  # unmasked, 64-bit length
        + bytes(limit)
    )
    frames = _FrameSizes(limit)
    for i in range(0, len(stream), chunk):
        frames.feed(stream[i : i + chunk])

    over = _frame_header(0x2, 60_000, final=False) + bytes(60_000) + _frame_header(0x0, 10_001)
    frames = _FrameSizes(limit)
    with pytest.raises(_MessageTooLargeError):
        for i in range(0, len(over), chunk):
            frames.feed(over[i : i + chunk])


def test_pace_books_time_for_all_its_takers(monkeypatch: pytest.MonkeyPatch) -> None:
    """What paces the gate's own work (connections accepted, the viewers' bytes read): a
    burst at once, then each take waits for the time booked before it; idle time pays back
    at most the burst."""
    now_ns = [10**12]
    monkeypatch.setattr(gate_module, "time", SimpleNamespace(monotonic_ns=lambda: now_ns[0]))
    pace = _Pace(20.0, 20)
    assert [pace.take(1) for _ in range(20)] == [0.0] * 20
    assert pace.take(1) == pytest.approx(0.05)
    assert pace.take(2) == pytest.approx(0.15)
    now_ns[0] += 10 * 10**9
    assert [pace.take(1) for _ in range(20)] == [0.0] * 20
    assert pace.take(1) == pytest.approx(0.05)
