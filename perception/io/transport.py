"""ZeroMQ PUB/SUB sockets carrying wire-format messages.

Each socket belongs to the thread that uses it (ZeroMQ sockets are not thread-safe). Publishers
never block: at the high-water mark a PUB socket drops messages, which is what a real-time node
wants (fresh data over complete data).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from perception.closeable import Closeable
from perception.errors import TransportError
from perception.msgs import wire
from perception.msgs.types import Message

__all__ = ["DEFAULT_HWM", "DEFAULT_MAX_MESSAGE_SIZE", "Publisher", "Subscriber", "default_endpoint"]

DEFAULT_HWM = 10
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


def default_endpoint(name: str) -> str:
    """An `ipc://` endpoint for `name` under the system temp directory
    (`<tmp>/perception-node/<name>.sock`; characters other than letters, digits, `.`, `_`, `-`
    become `_`).

    Raises:
        ValueError: `name` is empty.
    """
    if not name:
        raise ValueError("endpoint name must not be empty")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return f"ipc://{Path(tempfile.gettempdir()) / 'perception-node' / safe}.sock"


def _prepare_bind(endpoint: str) -> None:
    # ZeroMQ does not create directories for ipc sockets; "@" names are Linux abstract sockets.
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        path = Path(endpoint.removeprefix("ipc://"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TransportError(f"{endpoint}: cannot create socket directory: {e}") from None


def _attach(socket: zmq.Socket[bytes], endpoint: str, bind: bool) -> None:
    action = "bind" if bind else "connect"
    if bind:
        _prepare_bind(endpoint)
    try:
        if bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    except zmq.ZMQError as e:
        raise TransportError(f"{endpoint}: cannot {action}: {e}") from None


class Publisher(Closeable):
    """A PUB socket sending wire-format messages.

    `hwm` is the send high-water mark (messages queued per subscriber before ZeroMQ drops);
    buffers of at least `zero_copy_threshold` bytes are sent without copying (below it a copy is
    cheaper than ZeroMQ's zero-copy bookkeeping).

    Raises (constructor):
        TransportError: the endpoint cannot be bound or connected (address in use, bad scheme).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = True,
        hwm: int = DEFAULT_HWM,
        zero_copy_threshold: int = 65536,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.zero_copy_threshold = zero_copy_threshold
        self._owns_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket: zmq.Socket[bytes] = self._context.socket(zmq.PUB)
        self._closed = False
        try:
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.SNDHWM, hwm)
            _attach(self._socket, endpoint, bind)
        except BaseException:
            self.close()
            raise

    @property
    def socket(self) -> zmq.Socket[bytes]:
        """The underlying PUB socket (for options and tests)."""
        return self._socket

    @property
    def last_endpoint(self) -> str:
        """The endpoint actually bound or connected, e.g. the port chosen for `tcp://host:*`."""
        value = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        return value.decode() if isinstance(value, bytes) else str(value)

    def send(self, msg: Message, topic: str | None = None) -> None:
        """Encode and send `msg` on `topic` (default: its stream). Never blocks.

        Raises:
            WireError: the message is invalid (see `wire.encode`); nothing is sent.
            TransportError: the publisher is closed or ZeroMQ failed.
        """
        self.send_frames(wire.encode(msg, topic))

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
        self._socket.close(linger=0)
        if self._owns_context:
            self._context.term()


class Subscriber(Closeable):
    """SUB sockets receiving raw multipart messages on exact topics.

    One socket per topic, each connected to every endpoint, so each topic has its own receive
    high-water mark (`hwm`: one value for all, or a mapping topic -> hwm; topics it does not name
    get `DEFAULT_HWM`) and a flood on one stream cannot push out another. With `bind=True` the
    endpoints can be bound only once, so a single socket subscribes to all topics and its
    high-water mark is the largest requested.

    ZeroMQ subscriptions match prefixes; messages whose topic frame is not exactly a subscribed
    topic are dropped here (the empty topic "" subscribes to everything). `max_message_size`
    (bytes, per frame) is enforced by ZeroMQ: a peer sending more is disconnected and the
    message lost; the connection is re-established.

    Separate sockets do not keep the order of messages across topics. `priority` names topics
    whose waiting messages are taken before any other topic's (the rest in turn, so one busy
    topic cannot starve another): the node gives its rig and GNSS topics, so that a calibration
    or fix sent just before a sweep is filed before that sweep when both are waiting.

    Raises (constructor):
        ValueError: no endpoints or topics, `hwm` or `priority` names a topic not subscribed.
        TransportError: an endpoint cannot be bound or connected.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        topics: Sequence[str],
        *,
        bind: bool = False,
        hwm: int | Mapping[str, int] = DEFAULT_HWM,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        priority: Sequence[str] = (),
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

        self.endpoints = tuple(endpoints)
        self.topics = tuple(topic_list)
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
        self._closed = False
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
                socket.setsockopt(zmq.MAXMSGSIZE, max_message_size)
                for topic in group:
                    socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
                    self._topic_sockets[topic] = socket
                for endpoint in self.endpoints:
                    _attach(socket, endpoint, bind)
                accept = None if "" in group else frozenset(t.encode("utf-8") for t in group)
                self._accept[socket] = accept
                if not bind:
                    monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                    self._monitors[monitor] = socket
                    self._poller.register(monitor, zmq.POLLIN)
        except BaseException:
            self.close()
            raise
        # With one socket for every topic (bind) there is no order to choose.
        self._first = [] if bind else list(dict.fromkeys(self._topic_sockets[t] for t in priority))
        self._rotating = [sock for sock in self._sockets if sock not in self._first]

    def socket_for(self, topic: str) -> zmq.Socket[bytes]:
        """The SUB socket receiving `topic` (for options and tests).

        Raises:
            KeyError: `topic` is not subscribed.
        """
        return self._topic_sockets[topic]

    def pending(self) -> bool:
        """Whether a message is waiting on any topic (the receiver has a backlog)."""
        return any(int(s.getsockopt(zmq.EVENTS)) & zmq.POLLIN for s in self._sockets)

    def recv(self, timeout_ms: int) -> list[zmq.Frame] | None:
        """The frames (not copied) of the next message on any topic, or None after `timeout_ms`
        (0: do not wait; negative: wait forever).

        Raises:
            TransportError: the subscriber is closed or ZeroMQ failed.
        """
        if self._closed:
            raise TransportError(f"{', '.join(self.endpoints)}: subscriber is closed")
        deadline = None if timeout_ms < 0 else _now_ms() + timeout_ms
        while True:
            remaining = None if deadline is None else max(0, deadline - _now_ms())
            try:
                ready = dict(self._poller.poll(remaining))
            except zmq.ZMQError as e:
                raise TransportError(f"{', '.join(self.endpoints)}: poll failed: {e}") from None
            for monitor, socket in self._monitors.items():
                if monitor in ready:
                    self._reconnect(monitor, socket)
            for socket in self._first:
                if socket in ready and (frames := self._recv_from(socket)) is not None:
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
                    return frames
            if deadline is not None and _now_ms() >= deadline:
                return None

    def _recv_from(self, socket: zmq.Socket[bytes]) -> list[zmq.Frame] | None:
        try:
            frames: list[zmq.Frame] = socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        except zmq.ZMQError as e:
            raise TransportError(f"{', '.join(self.endpoints)}: receive failed: {e}") from None
        accept = self._accept[socket]
        # ZeroMQ matched a prefix; "camera/front" must not deliver "camera/front_left".
        if accept is not None and frames[0].bytes not in accept:
            return None
        return frames

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
            if event["event"] != zmq.EVENT_DISCONNECTED:
                continue
            lost = event["endpoint"].decode("utf-8", "replace")
            for endpoint in self.endpoints if lost not in self.endpoints else (lost,):
                with contextlib.suppress(zmq.ZMQError):  # libzmq may have forgotten it already
                    socket.disconnect(endpoint)
                _attach(socket, endpoint, bind=False)

    def close(self) -> None:
        """Close the sockets (linger 0) and the context if this subscriber created it.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        for monitor, socket in self._monitors.items():
            self._poller.unregister(monitor)
            socket.disable_monitor()
            monitor.close(linger=0)
        for socket in self._sockets:
            self._poller.unregister(socket)
            socket.close(linger=0)
        if self._owns_context:
            self._context.term()


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000
