"""ZeroMQ PUB/SUB sockets carrying wire-format messages.

Each socket belongs to the thread that uses it (ZeroMQ sockets are not thread-safe). Publishers
never block: at the high-water mark a PUB socket drops messages, which is what a real-time node
wants (fresh data over complete data).

Access (perception.io.runtime, perception.io.curve): `{runtime}` in an ipc endpoint is the
per-user runtime folder; binding an ipc endpoint checks its folder, refuses one another live
process holds and removes the socket file at close; with `curve` keys, tcp sockets use CURVE
(bound: a server admitting only the allowed clients; connected: a client proving its key) and
count refused handshakes (`rejected_peers`).

Shared memory (perception.io.shm): a Publisher on an `ipc://` endpoint sends the large buffers
of a message (64 KB and up) through a ring of shared-memory slots and ZeroMQ carries only a
descriptor; on any other endpoint the bytes go inline (`ShmConfig` may force inline). A
Subscriber resolves descriptors into `ShmFrame`s viewing the writer's memory (no copy), checks
the slots' generations, and drops and counts (`stale_payloads`, `refused_payloads`, reported to
`on_refused`) what it cannot use; one whose endpoints are all tcp refuses every descriptor.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import zmq
from zmq.utils.monitor import recv_monitor_message

from perception.closeable import Closeable
from perception.errors import StalePayloadError, TransportError, WireError
from perception.io.curve import HANDSHAKE_FAILED_EVENTS, CurveKeys, CurveServer, set_client
from perception.io.runtime import (
    BoundSocketFile,
    bound_socket_file,
    prepare_ipc_bind,
    remove_socket_file,
    resolve_endpoint,
    runtime_dir,
)
from perception.io.shm import ShmConfig, ShmFrame, ShmReader, ShmWriter, is_descriptor
from perception.msgs import wire
from perception.msgs.schema import DEFAULT_LIMITS, MAX_TOPIC_BYTES, WireLimits
from perception.msgs.types import Message

__all__ = [
    "DEFAULT_HWM",
    "MAX_SUBSCRIPTION_BYTES",
    "MAX_TOPIC_BYTES",
    "PRIORITY_STREAK",
    "Publisher",
    "ReceivedFrame",
    "Subscriber",
    "default_endpoint",
]

DEFAULT_HWM = 10
#: A frame `Subscriber.recv` returns: as ZeroMQ delivered it, or a view of shared memory.
ReceivedFrame: TypeAlias = zmq.Frame | ShmFrame
#: Priority messages a Subscriber returns in a row before another topic's waiting message.
PRIORITY_STREAK = 16
# After a refused handshake the endpoint is connected again this much later, not at once: a
# peer refusing every handshake must not make the receiver spin (libzmq itself does not retry
# after a refused key at all).
_HANDSHAKE_RETRY_MS = 1000
# After a dropped connection the endpoint is connected again at once, but not twice within this
# (libzmq's own reconnect interval): a peer that accepts and closes every connection made the
# receiver reconnect 4,000 times a second, a whole core.
_RECONNECT_MIN_MS = 100
#: The largest subscription a Publisher takes: a topic of `MAX_TOPIC_BYTES` and what carries it.
#: libzmq 4.3 (ZMTP 3.1) sends it as the SUBSCRIBE command, whose name and the name's length
#: byte count with the topic (measured: with one byte of room the longest 9 topics were dropped).
MAX_SUBSCRIPTION_BYTES = len(b"\x09SUBSCRIBE") + MAX_TOPIC_BYTES


def default_endpoint(name: str) -> str:
    """An `ipc://` endpoint for `name` in the per-user runtime folder
    (`<runtime>/<name>.sock`, perception.io.runtime; characters other than letters, digits,
    `.`, `_`, `-` become `_`).

    Raises:
        ValueError: `name` is empty.
        TransportError: the runtime folder is not usable.
    """
    if not name:
        raise ValueError("endpoint name must not be empty")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return f"ipc://{runtime_dir() / safe}.sock"


def _attach(socket: zmq.Socket[bytes], endpoint: str, bind: bool) -> BoundSocketFile | None:
    """Bind or connect `socket` (`endpoint` resolved); for a bound ipc endpoint, the socket
    file made (removed again by `remove_socket_file` at close)."""
    if not bind:
        try:
            socket.connect(endpoint)
        except zmq.ZMQError as e:
            raise TransportError(f"{endpoint}: cannot connect: {e}") from None
        return None
    path = prepare_ipc_bind(endpoint)
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as e:
        if e.errno == errno.EADDRINUSE:
            raise TransportError(
                f"{endpoint}: cannot bind: in use by another process ({e}); stop it or choose "
                "another endpoint"
            ) from None
        raise TransportError(f"{endpoint}: cannot bind: {e}") from None
    return None if path is None else bound_socket_file(path)


def _curve_applies(endpoints: Sequence[str], curve: CurveKeys | None) -> bool:
    """Whether sockets on `endpoints` use CURVE: keys given and the endpoints are tcp. CURVE is
    a property of a socket, so its endpoints must be all tcp or none."""
    if curve is None:
        return False
    tcp = [e.startswith("tcp://") for e in endpoints]
    if any(tcp) and not all(tcp):
        raise TransportError(
            f"{', '.join(endpoints)}: with CURVE, one socket's endpoints must be all tcp:// or "
            "none (CURVE covers tcp only)"
        )
    return all(tcp)


class Publisher(Closeable):
    """A PUB socket sending wire-format messages.

    `hwm` is the send high-water mark (messages queued per subscriber before ZeroMQ drops);
    buffers of at least `zero_copy_threshold` bytes are sent without copying (below it a copy is
    cheaper than ZeroMQ's zero-copy bookkeeping). `curve`: keys for CURVE on a tcp endpoint
    (bound: a CURVE server admitting `curve.allowed_clients`, which needs a context of its own;
    connected: a CURVE client); ignored for other endpoints. `shm`: how large buffers use
    shared memory (default: on ipc endpoints, perception.io.shm); `send_frames` always sends
    its frames as given. `limits`: what `send` may encode (`wire.encode`): the node's raised
    for a 12 MP camera, or a drive's as recorded (`replay.drive.DriveReader.limits`).

    Raises (constructor):
        TransportError: the endpoint cannot be bound or connected (address in use, another
            live process holds it, an unsafe socket folder, bad scheme).
        ValueError: CURVE on a bound tcp endpoint with a shared `context`; shared memory forced
            on an endpoint other than ipc.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = True,
        hwm: int = DEFAULT_HWM,
        zero_copy_threshold: int = 65536,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveKeys | None = None,
        shm: ShmConfig = ShmConfig(),  # noqa: B008 (frozen: one shared default is fine)
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> None:
        self.endpoint = resolve_endpoint(endpoint, connect=not bind)
        self.zero_copy_threshold = zero_copy_threshold
        self.limits = limits
        use_shm = shm.applies(self.endpoint)
        with_curve = _curve_applies([self.endpoint], curve)
        if with_curve and bind and context is not None:
            raise ValueError("a CURVE server needs a context of its own (one ZAP handler each)")
        self._owns_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.PUB)
        self._closed = False
        self._server: CurveServer | None = None
        self._bound_file: BoundSocketFile | None = None
        self._shm: ShmWriter | None = None
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.SNDHWM, hwm)
            # What a publisher receives are its subscribers' subscriptions, which libzmq reads
            # whole and then matches on the sending thread: one of 100 MiB stalled the node's
            # worker until its watchdog ended the process. A larger one drops its connection.
            self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            if with_curve and curve is not None:
                if bind:
                    self._server = CurveServer(self._context, self._socket, curve, self.endpoint)
                else:
                    set_client(self._socket, curve)
            self._bound_file = _attach(self._socket, self.endpoint, bind)
            if use_shm:
                self._shm = ShmWriter(shm)
        except BaseException:
            self.close()
            raise

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The underlying PUB socket (for options and tests)."""
        return self._socket

    @property
    def shm(self) -> ShmWriter | None:
        """The shared-memory writer (its segments and counters), None when the bytes go inline."""
        return self._shm

    @property
    def shm_fallbacks(self) -> int:
        """Messages sent inline although shared memory was in use (a ring full of slots younger
        than its hold time, or a segment that could not be made); 0 without shared memory."""
        return 0 if self._shm is None else self._shm.fallbacks

    @property
    def last_endpoint(self) -> str:
        """The endpoint actually bound or connected, e.g. the port chosen for `tcp://host:*`."""
        value = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        return value.decode() if isinstance(value, bytes) else str(value)

    @property
    def rejected_peers(self) -> int:
        """Handshakes refused so far on a bound CURVE endpoint (a subscriber whose key is not
        allowed, or without CURVE); 0 without CURVE."""
        return 0 if self._server is None else self._server.rejected

    def send(self, msg: Message, topic: str | None = None) -> None:
        """Encode and send `msg` on `topic` (default: its stream). Never blocks.

        Raises:
            WireError: the message is invalid (see `wire.encode`); nothing is sent.
            TransportError: the publisher is closed or ZeroMQ failed.
        """
        frames = wire.encode(msg, topic, limits=self.limits)
        if self._shm is not None:
            if self._closed:
                raise TransportError(f"{self.endpoint}: publisher is closed")
            frames = self._shm.pack(frames, msg.header.stream if topic is None else topic)
        self.send_frames(frames)

    def loan(self, topic: str, shape: Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """A writable array for the next message on `topic`, to fill and send: with shared
        memory, inside the slot the message will be published from, so `send` copies nothing
        (perception.io.shm: the loan ends with the next send on `topic`, after which the array
        is read-only); without, an ordinary new array.

        Raises:
            TransportError: the publisher is closed.
            ValueError: a negative dimension, or a size above the shared-memory frame limit.
        """
        if self._closed:
            raise TransportError(f"{self.endpoint}: publisher is closed")
        if self._shm is None:
            return np.empty(tuple(shape), dtype)
        return self._shm.loan(topic, shape, dtype)

    def send_frames(self, frames: Sequence[bytes | memoryview]) -> None:
        """Send a prepared multipart message (topic first). Never blocks; a message over the
        high-water mark is dropped by ZeroMQ.

        Raises:
            ValueError: `frames` is empty.
            TransportError: the publisher is closed or ZeroMQ failed.
        """
        if not frames:
            raise ValueError("cannot send an empty multipart message")
        if self._closed:
            raise TransportError(f"{self.endpoint}: publisher is closed")
        last = len(frames) - 1
        try:
            for i, frame in enumerate(frames):
                flags = zmq.NOBLOCK | (zmq.SNDMORE if i < last else 0)
                size = frame.nbytes if isinstance(frame, memoryview) else len(frame)
                self._socket.send(frame, flags=flags, copy=size < self.zero_copy_threshold)
        except zmq.Again:
            # PUB drops at the HWM rather than raising; kept for sockets with NODROP-like options.
            return
        except zmq.ZMQError as e:
            raise TransportError(f"{self.endpoint}: send failed: {e}") from None

    def close(self) -> None:
        """Close the socket (pending messages are dropped: linger 0) and the context if this
        publisher created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        self._socket.close(linger=0)
        if self._owns_context:
            self._context.term()
        if self._bound_file is not None:
            remove_socket_file(self._bound_file)
        if self._shm is not None:
            self._shm.close()


class Subscriber(Closeable):
    """SUB sockets receiving raw multipart messages on exact topics.

    One socket per topic, each connected to every endpoint, so each topic has its own receive
    high-water mark (`hwm`: one value for all, or a mapping topic -> hwm; topics it does not name
    get `DEFAULT_HWM`) and a flood on one stream cannot push out another. With `bind=True` the
    endpoints can be bound only once, so a single socket subscribes to all topics and its
    high-water mark is the largest requested.

    ZeroMQ subscriptions match prefixes; messages whose topic frame is not exactly a subscribed
    topic are dropped here (the empty topic "" subscribes to everything).

    Bounds (`limits`, perception.msgs.schema.WireLimits), enforced while receiving, before any
    decoding: ZeroMQ refuses a frame above `max_message_bytes` before reading it (a protocol
    error to libzmq: it drops the connection, which a connecting subscriber re-establishes and
    reports to `on_disconnect(endpoint)`); a message of more than `max_frames` frames or more than
    `max_message_bytes` bytes in all is received frame by frame, its frames dropped as they
    arrive, and reported to `on_refused(WireError)` naming the topic and the problem. Both
    callbacks run on the receiving thread, inside `recv`. ZeroMQ hands over a multipart message
    only once all of it has arrived, so inside ZeroMQ the per-frame limit is what bounds one
    frame's memory; the frame and byte limits keep an over-long message from being held here
    and from reaching the decoder.

    Separate sockets do not keep the order of messages across topics. `priority` names topics
    whose waiting messages are taken before any other topic's (the rest in turn, so one busy
    topic cannot starve another): the node gives its rig and GNSS topics, so that a calibration
    or fix sent just before a sweep is filed before that sweep when both are waiting. At most
    `PRIORITY_STREAK` priority messages are taken in a row while another topic has one
    waiting, so a flood on a priority topic cannot starve the others either.

    `curve`: keys for CURVE when the endpoints are tcp (connected: each socket a CURVE client,
    accepting only a publisher that proves `curve.server_key`; bound: a CURVE server admitting
    `curve.allowed_clients`, which needs a context of its own). `rejected_peers` counts the
    refused handshakes; an endpoint whose handshake failed is connected again after a second.

    Shared memory (perception.io.shm): `shm` None (default) accepts descriptor messages when an
    endpoint is ipc (a publisher on this host), False or all-tcp endpoints refuse them. `recv`
    returns such a message's moved frames as `ShmFrame`s viewing the writer's slots (no copy;
    `shm_copy=True`: private copies, for a holder that keeps messages beyond the writer's hold
    time). A message it cannot use is dropped, counted and reported to `on_refused`: a slot its
    writer recycled (`StalePayloadError`; `stale_payloads`), any other fault of a descriptor
    (`WireError` naming the topic and the fault; `refused_payloads`). The segments of writers
    that died are swept at start, at close and whenever a publisher's connection drops.

    Raises (constructor):
        ValueError: no endpoints or topics, `hwm` or `priority` names a topic not subscribed;
            CURVE on a bound tcp endpoint with a shared `context`.
        TransportError: an endpoint cannot be bound or connected; tcp and other endpoints
            mixed with `curve`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        topics: Sequence[str],
        *,
        bind: bool = False,
        hwm: int | Mapping[str, int] = DEFAULT_HWM,
        limits: WireLimits = DEFAULT_LIMITS,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        priority: Sequence[str] = (),
        curve: CurveKeys | None = None,
        on_refused: Callable[[WireError], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        shm: bool | None = None,
        shm_copy: bool = False,
    ) -> None:
        if isinstance(endpoints, str) or isinstance(topics, str):
            raise ValueError("endpoints and topics must be sequences of strings, not a string")
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        if not topics:
            raise ValueError("at least one topic is required")
        topic_list = list(dict.fromkeys(topics))
        if isinstance(hwm, Mapping):
            unknown = sorted(set(hwm) - set(topic_list))
            if unknown:
                raise ValueError(f"hwm names topics that are not subscribed: {unknown}")
            hwms = {t: hwm.get(t, DEFAULT_HWM) for t in topic_list}
        else:
            hwms = dict.fromkeys(topic_list, hwm)
        unknown_priority = sorted(set(priority) - set(topic_list))
        if unknown_priority:
            raise ValueError(f"priority names topics that are not subscribed: {unknown_priority}")

        # Resolved: libzmq reports the endpoints it was given, and _reconnect matches them.
        self.endpoints = tuple(resolve_endpoint(e, connect=not bind) for e in endpoints)
        self.topics = tuple(topic_list)
        self.limits = limits
        self._on_refused = on_refused
        self._on_disconnect = on_disconnect
        accept_shm = any(e.startswith("ipc://") for e in self.endpoints) if shm is None else shm
        self._shm = ShmReader(copy=shm_copy) if accept_shm else None
        self._stale_payloads = 0
        self._refused_payloads = 0
        with_curve = _curve_applies(self.endpoints, curve)
        if with_curve and bind and context is not None:
            raise ValueError("a CURVE server needs a context of its own (one ZAP handler each)")
        self._owns_context = context is None
        self._context = zmq.Context() if context is None else context
        self._poller = zmq.Poller()
        # socket -> the exact topics it accepts (None: everything)
        self._accept: dict[zmq.Socket[bytes], frozenset[bytes] | None] = {}
        self._sockets: list[zmq.Socket[bytes]] = []
        self._topic_sockets: dict[str, zmq.Socket[bytes]] = {}
        # monitor socket -> the SUB socket it watches (connect mode only, see _reconnect)
        self._monitors: dict[zmq.Socket[bytes], zmq.Socket[bytes]] = {}
        self._bind = bind
        self._next = 0
        self._streak = 0  # priority messages returned in a row
        # Messages taken off a socket before it reconnected (see _reconnect), returned first.
        self._queued: collections.deque[list[zmq.Frame]] = collections.deque()
        self._closed = False
        self._server: CurveServer | None = None
        self._bound_files: list[BoundSocketFile] = []
        self._handshake_failures = 0
        # (socket, endpoint) -> when (monotonic ms) to connect it again after a refused handshake
        self._retry_at: dict[tuple[zmq.Socket[bytes], str], int] = {}
        # When each endpoint that dropped was last connected again (`_RECONNECT_MIN_MS`).
        self._attached_at: dict[tuple[zmq.Socket[bytes], str], int] = {}
        try:
            groups = (
                [(topic_list, max(hwms.values()))] if bind else [([t], hwms[t]) for t in topic_list]
            )
            for group, group_hwm in groups:
                socket = self._context.socket(zmq.SUB)
                self._sockets.append(socket)
                self._poller.register(socket, zmq.POLLIN)
                socket.setsockopt(zmq.LINGER, 0)
                socket.setsockopt(zmq.RCVHWM, group_hwm)
                # Per frame: the whole message is bounded frame by frame in _recv_from.
                socket.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
                for topic in group:
                    socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
                    self._topic_sockets[topic] = socket
                if with_curve and curve is not None:
                    if bind:
                        self._server = CurveServer(self._context, socket, curve, self.endpoints[0])
                    else:
                        set_client(socket, curve)
                for endpoint in self.endpoints:
                    bound = _attach(socket, endpoint, bind)
                    if bound is not None:
                        self._bound_files.append(bound)
                accept = None if "" in group else frozenset(t.encode("utf-8") for t in group)
                self._accept[socket] = accept
                if not bind:
                    events = zmq.EVENT_DISCONNECTED | (HANDSHAKE_FAILED_EVENTS if with_curve else 0)
                    monitor = socket.get_monitor_socket(events)
                    self._monitors[monitor] = socket
                    self._poller.register(monitor, zmq.POLLIN)
        except BaseException:
            self.close()
            raise
        # With one socket for every topic (bind) there is no order to choose.
        self._first = [] if bind else list(dict.fromkeys(self._topic_sockets[t] for t in priority))
        self._rotating = [sock for sock in self._sockets if sock not in self._first]

    @property
    def rejected_peers(self) -> int:
        """Handshakes refused so far with CURVE: connected, publishers that did not prove the
        server key (or refused ours, or spoke without CURVE); bound, clients not allowed. 0
        without CURVE."""
        if self._server is not None:
            return self._server.rejected
        return self._handshake_failures

    @property
    def stale_payloads(self) -> int:
        """Messages dropped because their shared-memory slot was recycled before they were read
        (the receiver fell behind the writer's ring)."""
        return self._stale_payloads

    @property
    def refused_payloads(self) -> int:
        """Descriptor messages refused for any other fault (malformed, a missing or foreign
        segment, out of bounds, a wrong generation, shared memory not accepted here)."""
        return self._refused_payloads

    def socket_for(self, topic: str) -> zmq.Socket[bytes]:
        """The SUB socket receiving `topic` (for options and tests).

        Raises:
            KeyError: `topic` is not subscribed.
        """
        return self._topic_sockets[topic]

    def pending(self) -> bool:
        """Whether a message is waiting on any topic (the receiver has a backlog)."""
        return any(int(s.getsockopt(zmq.EVENTS)) & zmq.POLLIN for s in self._sockets)

    def recv(self, timeout_ms: int) -> list[ReceivedFrame] | None:
        """The frames (not copied) of the next message on any topic, or None after `timeout_ms`
        (0: do not wait; negative: wait forever). Frames that travelled in shared memory are
        `ShmFrame`s (`.buffer` as a zmq.Frame's; see `payload_intact` in perception.io.shm).

        Raises:
            TransportError: the subscriber is closed or ZeroMQ failed.
        """
        if self._closed:
            raise TransportError(f"{', '.join(self.endpoints)}: subscriber is closed")
        deadline = None if timeout_ms < 0 else _now_ms() + timeout_ms
        while True:
            frames = self._take(deadline)
            if frames is None:
                return None
            if len(frames) < 2 or not is_descriptor(frames[1]):
                return [*frames]
            resolved = self._resolve(frames)
            if resolved is not None:
                return resolved
            # Past the deadline even with more waiting: a flood of bad descriptors must not
            # keep the caller (and its heartbeat) in here.
            if deadline is not None and _now_ms() >= deadline:
                return None

    def _resolve(self, frames: list[zmq.Frame]) -> list[ReceivedFrame] | None:
        """A descriptor message's frames with the shared-memory ones in place; None when it is
        dropped (counted, reported to `on_refused`)."""
        try:
            if self._shm is None:
                topic = frames[0].bytes[:256].decode("utf-8", "replace") or "<empty topic>"
                raise WireError(
                    topic,
                    "a shared-memory descriptor on a subscriber that does not accept them (its "
                    f"endpoints {', '.join(self.endpoints)} are not ipc): refused",
                )
            return self._shm.resolve(frames, self.limits)
        except StalePayloadError as e:
            self._stale_payloads += 1
            error: WireError = e
        except WireError as e:
            self._refused_payloads += 1
            error = e
        if self._on_refused is not None:
            self._on_refused(error)
        return None

    def _take(self, deadline: int | None) -> list[zmq.Frame] | None:
        """The next message as received (descriptors not resolved), or None at `deadline`."""
        while True:
            if self._queued:
                return self._queued.popleft()
            if self._retry_at:
                self._retry_refused()
            remaining = None if deadline is None else max(0, deadline - _now_ms())
            if self._retry_at:
                # Woken when a retry is due, not only by a message.
                due = max(0, min(self._retry_at.values()) - _now_ms())
                remaining = due if remaining is None else min(remaining, due)
            try:
                ready = dict(self._poller.poll(remaining))
            except zmq.ZMQError as e:
                raise TransportError(f"{', '.join(self.endpoints)}: poll failed: {e}") from None
            for monitor, socket in self._monitors.items():
                if monitor in ready:
                    self._reconnect(monitor, socket)
            if self._queued:
                return self._queued.popleft()
            # Priority topics first, but not more than PRIORITY_STREAK times in a row while
            # another topic has a message waiting: a flood of rigs must not starve the sensors.
            if self._streak < PRIORITY_STREAK and (frames := self._recv_first(ready)):
                self._streak += 1
                return frames
            # Rotate the starting socket so one busy topic cannot starve the others.
            n = len(self._rotating)
            for k in range(n):
                socket = self._rotating[(self._next + k) % n]
                if socket not in ready:
                    continue
                frames = self._recv_from(socket)
                if frames is not None:
                    self._next = (self._next + k + 1) % n
                    self._streak = 0
                    return frames
            if self._streak >= PRIORITY_STREAK and (frames := self._recv_first(ready)):
                return frames  # nothing else was waiting
            if deadline is not None and _now_ms() >= deadline:
                return None

    def _recv_first(self, ready: Mapping[zmq.Socket[bytes], int]) -> list[zmq.Frame] | None:
        for socket in self._first:
            if socket in ready and (frames := self._recv_from(socket)) is not None:
                return frames
        return None

    def _recv_from(self, socket: zmq.Socket[bytes]) -> list[zmq.Frame] | None:
        """The next message on `socket`, received frame by frame (not copied): None when there
        is none, when its topic is not subscribed, or when it is above the frame or byte limit
        (then its frames are dropped as they arrive, and it is reported to `on_refused`)."""
        try:
            first: zmq.Frame = socket.recv(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        except zmq.ZMQError as e:
            raise TransportError(f"{', '.join(self.endpoints)}: receive failed: {e}") from None
        accept = self._accept[socket]
        # ZeroMQ matched a prefix; "camera/front" must not deliver "camera/front_left".
        wanted = accept is None or first.bytes in accept
        frames = [first]
        count, size = 1, len(first)
        max_frames, max_bytes = self.limits.max_frames, self.limits.max_message_bytes
        more = first.more
        while more:
            try:
                # ZeroMQ delivers a multipart message whole: the rest is already here.
                frame: zmq.Frame = socket.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.ZMQError as e:
                raise TransportError(
                    f"{', '.join(self.endpoints)}: receive failed within a message: {e}"
                ) from None
            more = frame.more
            count += 1
            size += len(frame)
            if wanted and count <= max_frames and size <= max_bytes:
                frames.append(frame)
            else:
                frames.clear()  # dropped as they arrive: memory stays at one frame
        if not wanted:
            return None
        if count > max_frames or size > max_bytes:
            self._refuse(first, count, size)
            return None
        return frames

    def _refuse(self, first: zmq.Frame, count: int, size: int) -> None:
        if self._on_refused is None:
            return
        topic = first.bytes[:256].decode("utf-8", "replace") or "<empty topic>"
        if count > self.limits.max_frames:
            problem = f"too many frames: {count}, above the limit of {self.limits.max_frames}"
        else:
            problem = (
                f"oversize message: {size} bytes in {count} frames, above the limit of "
                f"{self.limits.max_message_bytes}"
            )
        self._on_refused(WireError(topic, f"{problem} (refused while receiving)"))

    def _reconnect(self, monitor: zmq.Socket[bytes], socket: zmq.Socket[bytes]) -> None:
        # libzmq treats a message above MAXMSGSIZE as a protocol error and drops the connection
        # for good (it reconnects only after network errors), so one oversize message would cut
        # a connecting subscriber off its publisher forever. Re-adding the endpoint restores it;
        # after an ordinary disconnect it merely restarts libzmq's own reconnection.
        while True:
            try:
                event = recv_monitor_message(monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as e:
                raise TransportError(f"{', '.join(self.endpoints)}: monitor failed: {e}") from None
            if event["event"] & HANDSHAKE_FAILED_EVENTS:
                self._refused(socket, event["endpoint"].decode("utf-8", "replace"))
                continue
            if event["event"] != zmq.EVENT_DISCONNECTED:
                continue
            lost = event["endpoint"].decode("utf-8", "replace")
            if self._shm is not None:
                # A writer killed with -9 leaves its segments: its connection dropping is the
                # first sign of that here.
                self._shm.forget_dead()
            if self._on_disconnect is not None:
                self._on_disconnect(lost)
            # zmq_disconnect drops the socket's end of the connection's queue at once: a
            # multipart message being read from it then aborts the process (libzmq asserts
            # "!_more" in fq.cpp). Everything already queued is taken first, whole.
            self._drain(socket)
            key = (socket, lost)
            if key in self._retry_at:
                continue  # refused or too soon: connected again when the retry is due
            last = self._attached_at.get(key)
            if last is not None and _now_ms() - last < _RECONNECT_MIN_MS:
                self._retry_at[key] = last + _RECONNECT_MIN_MS
                continue
            self._reattach(socket, lost)

    def _reattach(self, socket: zmq.Socket[bytes], lost: str) -> None:
        self._attached_at[(socket, lost)] = _now_ms()
        for endpoint in self.endpoints if lost not in self.endpoints else (lost,):
            with contextlib.suppress(zmq.ZMQError):  # libzmq may have forgotten it already
                socket.disconnect(endpoint)
            _attach(socket, endpoint, bind=False)

    def _drain(self, socket: zmq.Socket[bytes]) -> None:
        """Move every message waiting on `socket` into `_queued` (what `recv` returns next)."""
        try:
            while socket.poll(0, zmq.POLLIN):
                frames = self._recv_from(socket)
                if frames is not None:
                    self._queued.append(frames)
        except zmq.ZMQError as e:
            raise TransportError(f"{', '.join(self.endpoints)}: receive failed: {e}") from None

    def _refused(self, socket: zmq.Socket[bytes], endpoint: str) -> None:
        self._handshake_failures += 1
        # Not at once: a peer refusing every handshake must not make us spin. Scheduled here,
        # not on the disconnect that usually follows: under load libzmq may not report one.
        self._retry_at.setdefault((socket, endpoint), _now_ms() + _HANDSHAKE_RETRY_MS)

    def _retry_refused(self) -> None:
        now = _now_ms()
        for key, due in list(self._retry_at.items()):
            if due > now:
                continue
            del self._retry_at[key]
            self._reattach(*key)

    def close(self) -> None:
        """Close the sockets (linger 0) and the context if this subscriber created it; remove
        the ipc socket files it bound. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for monitor, socket in self._monitors.items():
            self._poller.unregister(monitor)
            socket.disable_monitor()
            monitor.close(linger=0)
        for socket in self._sockets:
            self._poller.unregister(socket)
            socket.close(linger=0)
        if self._owns_context:
            self._context.term()
        for bound in self._bound_files:
            remove_socket_file(bound)
        if self._shm is not None:
            self._shm.close()


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000
