"""The live view: a Foxglove WebSocket server (foxglove-sdk) fed off the node's hot path.

`perception run --foxglove` and `perception view` serve it; the Foxglove app opens
`ws://HOST:PORT`. What it shows, one channel per topic, in the schemas of
perception.msgs.foxglove (the ones a recorded drive uses: one schema per message):

- the camera images (`foxglove.RawImage` / `CompressedImage`) and the lidar points
  (`foxglove.PointCloud`, sensor frame) on their sensor topics, the GNSS fix
  (`foxglove.LocationFix`) on the GNSS topic;
- the detections and the tracks as 3D boxes (`foxglove.SceneUpdate`: labels with class, score
  and sources; track ids and speeds) on their output topics;
- the rig's frame transforms (`foxglove.FrameTransforms`) on the rig topic, the ego pose (the
  ENU frame -> the vehicle frame) on `ego_pose`;
- each DetectionList's per-stage timings and latency in ms (JSON) on `timings`, and the
  node's Diagnostics (JSON) on the diagnostics topic.

Off the hot path: `offer` files an entry under a key (the node: `frame`, `diagnostics`;
`perception view`: the topic) in a queue of `queue_size` entries per key, dropping the oldest
when it is full (counted: a viewer wants the newest, never a backlog), and wakes the view's
thread, which converts and sends. A message is converted only for a channel a client
subscribes to (the channels of the expected topics are advertised from the start; one of
another topic or schema is made from its first message), so a view nobody watches costs the
node an append per frame. The arrays are the node's own (no
copy); a frame whose shared-memory payload (perception.io.shm) is recycled while queued (held
500 ms) would show the newer bytes: a viewer's glitch, never a fault of the node.

Frames are shown at most `rate_hz` a second (5 by default; each frame's timings always), a
sweep thinned to `max_points` and images scaled by `image_scale`: converting and sending a
frame costs the view's thread 1-2 ms of CPU, which a node with no idle CPU pays.

Each server has a `foxglove.Context` of its own, so several views can run in one process.
Conversion failures are counted and logged at a bounded rate; nothing raises out of the
thread.

Viewers connect through a `view_gate.Gate`, which bounds what the SDK cannot (how many, how
long to open, how large a message; its log lines' rate), and relays them to the SDK's server on
a loopback port.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from calibration import CalibrationError, Rig
from perception.config import NodeConfig, ViewConfig
from perception.errors import TransportError
from perception.io.runtime import url_host
from perception.msgs.foxglove import (
    FoxgloveMessage,
    FoxgloveSchema,
    channel_schema,
    ego_transforms,
    from_protobuf,
    rig_transforms,
    timings_foxglove,
    to_foxglove,
)
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    GnssFix,
    LidarSweep,
    Message,
    RigMessage,
    SyncedBundle,
    TrackList,
)
from perception.node.view_gate import LOOPBACK, Gate, gate_sdk_lines, lower_priority
from perception.ratelimit import RateLimitedLogger
from perception.sync.ego import EgoPoseBuffer, world_from_vehicle

if TYPE_CHECKING:
    import foxglove
    from foxglove.websocket import WebSocketServer

__all__ = [
    "CLIENT_BACKLOG_MESSAGES",
    "FoxgloveView",
    "ViewFrame",
    "ViewMessage",
    "ViewStats",
    "ViewTopics",
]

log = logging.getLogger("perception.view")

#: The world frame of the ego pose: the tracker's (perception.pipeline.tracking).
WORLD_FRAME = "enu"
_WAKE_TIMEOUT_S = 0.5
#: The key of the node's processed frames in the view's `rate_hz` bookkeeping.
_FRAME = "\x00frame"
_RIG_PERIOD_S = 1.0


@dataclass(frozen=True)
class ViewTopics:
    """The topics the view publishes on: the node's (`from_config`) plus its own two."""

    detections: str = "detections"
    tracks: str = "tracks"
    diagnostics: str = "diagnostics"
    rig: str = "rig"
    gnss: str = "gnss"
    lidar: str = "lidar/top"
    cameras: tuple[str, ...] = ("camera/front",)
    ego_pose: str = "ego_pose"
    timings: str = "timings"

    @classmethod
    def from_config(cls, config: NodeConfig) -> ViewTopics:
        out, inputs = config.outputs, config.inputs
        return cls(
            out.detections_topic,
            out.tracks_topic,
            out.diagnostics_topic,
            inputs.rig_topic,
            inputs.gnss_topic,
            inputs.lidar_topic,
            inputs.camera_topics,
        )

    def schemas(self) -> dict[str, str]:
        """The schema expected on each topic (a camera's: raw images, as the node's sources
        send them; a compressed one gets its channel replaced)."""
        return {
            self.lidar: "foxglove.PointCloud",
            **dict.fromkeys(self.cameras, "foxglove.RawImage"),
            self.gnss: "foxglove.LocationFix",
            self.rig: "foxglove.FrameTransforms",
            self.ego_pose: "foxglove.FrameTransforms",
            self.detections: "foxglove.SceneUpdate",
            self.tracks: "foxglove.SceneUpdate",
            self.timings: "perception.Timings",
            self.diagnostics: "perception.Diagnostics",
        }


@dataclass(frozen=True)
class ViewFrame:
    """One processed sweep as the node published it: the bundle it worked on (sweep, images,
    GNSS fix, rig, ego pose), its DetectionList and its TrackList (None: the tracker failed)."""

    bundle: SyncedBundle | None
    detections: DetectionList
    tracks: TrackList | None = None


@dataclass(frozen=True)
class ViewMessage:
    """One message received on `topic` (`perception view`) or produced (diagnostics)."""

    topic: str
    message: Message


@dataclass
class ViewStats:
    """`offered` entries, `dropped` from a full queue, `sent` messages to subscribed clients,
    `errors` messages that could not be converted; `busy_ns`: the CPU time the view's thread
    spent on entries (converting and sending: what it can take from the node's threads).

    Viewers the gate closed (perception.node.view_gate): `refused_clients` at once
    (`MAX_VIEW_CLIENTS` connected),
    `timed_out_clients` without an upgrade request in `HANDSHAKE_TIMEOUT_S`,
    `oversized_clients` for a request over `MAX_REQUEST_BYTES` or a message over
    `MAX_CLIENT_MESSAGE_BYTES`."""

    offered: int = 0
    dropped: int = 0
    sent: int = 0
    errors: int = 0
    busy_ns: int = 0
    refused_clients: int = 0
    timed_out_clients: int = 0
    oversized_clients: int = 0


# (topic, log time ns, the conversion, run only when someone will see it).
_Entry = tuple[str, int, Callable[[], FoxgloveMessage]]


#: Messages the server holds for each client that does not read them, the oldest dropped
#: beyond (the SDK's default, 1,024, held 130 MB of points and images for each client that
#: never read: 50 such clients took 6.9 GB). A viewer shows the newest frame anyway.
CLIENT_BACKLOG_MESSAGES = 32


class FoxgloveView:
    """A Foxglove WebSocket server and the thread that feeds it (see the module docstring).

    `start` binds the server and starts the thread; `offer` never blocks; `close` stops both.
    """

    def __init__(
        self, config: ViewConfig, topics: ViewTopics | None = None, *, name: str = "perception"
    ) -> None:
        self.config = config
        self.topics = topics or ViewTopics()
        self.name = name
        self.stats = ViewStats()
        self._lock = threading.Lock()
        self._queues: dict[str, deque[ViewFrame | ViewMessage]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: WebSocketServer | None = None
        self._gate: Gate | None = None
        self._context: foxglove.Context | None = None
        # topic -> (channel, schema name): a topic whose schema changes gets a new channel.
        self._channels: dict[str, tuple[foxglove.Channel, str]] = {}
        self._bad = RateLimitedLogger(log)
        # `perception view` derives the ego pose from the GNSS fixes and the rig it receives.
        self._ego = EgoPoseBuffer()
        self._rig: Rig | None = None
        # The node's rig last sent, and when (monotonic s).
        self._rig_sent: Rig | None = None
        self._rig_sent_at = 0.0
        # topic (or _FRAME) -> the stamp (ns) of its message last shown (`rate_hz`).
        self._shown: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the server and start the view's thread (and the gate's, see the module
        docstring).

        Raises TransportError naming the address when the server cannot bind (a port in use).
        """
        try:
            import foxglove  # noqa: PLC0415 (the SDK loads only where a view is served)
        except ImportError:
            raise TransportError(
                "view: the Foxglove SDK is not installed (pip install 'perception-node[view]')"
            ) from None

        self._context = foxglove.Context()
        # Every expected channel exists before any client connects: a client is told of them
        # as it connects, before its first request is read. A channel made while a client is
        # connected is advertised first and registered for it just after (foxglove-sdk 0.30),
        # so a quick client can be refused its subscription as for an unknown channel.
        for topic, schema_name in self.topics.schemas().items():
            self._channel(topic, channel_schema(schema_name))
        host, port = self.config.host, self.config.port
        gate_sdk_lines()
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            # "::" serves IPv4 too, as the SDK's listener did.
            dualstack = family == socket.AF_INET6 and socket.has_dualstack_ipv6()
            listener = socket.create_server((host, port), family=family, dualstack_ipv6=dualstack)
        except OSError as e:
            raise TransportError(
                f"view: cannot serve Foxglove WebSocket on {host}:{port}: {e.strerror or e}"
            ) from None
        try:
            self._server = foxglove.start_server(
                name=self.name,
                host=LOOPBACK,
                port=0,
                context=self._context,
                message_backlog_size=CLIENT_BACKLOG_MESSAGES,
            )
        except RuntimeError as e:
            listener.close()
            reason = str(e).removeprefix("FoxgloveError: ")
            raise TransportError(
                f"view: cannot start the Foxglove server on {LOOPBACK}: {reason}"
            ) from None
        self._gate = Gate(listener, int(self._server.port), self._count_closed)
        self._gate.start(self.config.nice)
        self._thread = threading.Thread(target=self._run, name="view", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port the view listens on (the chosen one when configured 0)."""
        if self._gate is None:
            raise RuntimeError("the view is not started")
        return self._gate.port

    def _count_closed(self, kind: str) -> None:
        """A viewer the gate closed: `kind` names its ViewStats counter."""
        with self._lock:
            setattr(self.stats, kind, getattr(self.stats, kind) + 1)

    @property
    def url(self) -> str:
        """What the Foxglove app opens."""
        return f"ws://{url_host(self.config.host)}:{self.port}"

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the thread (what is queued is dropped), the gate (its viewers disconnected)
        and the server."""
        self._stop.set()
        self._wake.set()
        if self._gate is not None:
            self._gate.close(timeout_s)
            self._gate = None
        if self._thread is not None:
            self._thread.join(timeout_s)
        for channel, _ in self._channels.values():
            channel.close()
        self._channels.clear()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FoxgloveView:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the producer side (any thread) ------------------------------------------------------

    def offer(self, key: str, entry: ViewFrame | ViewMessage) -> None:
        """Queue `entry` under `key` for the view's thread; the oldest entry under that key is
        dropped (counted) when `queue_size` are waiting. Never blocks on the view."""
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque(maxlen=self.config.queue_size)
            if len(queue) == queue.maxlen:
                self.stats.dropped += 1
            queue.append(entry)
            self.stats.offered += 1
        self._wake.set()

    # -- the view's thread -------------------------------------------------------------------

    def _run(self) -> None:
        lower_priority(self.config.nice)
        while not self._stop.is_set():
            self._wake.wait(_WAKE_TIMEOUT_S)
            self._wake.clear()
            while not self._stop.is_set() and (entry := self._next()) is not None:
                # CPU time: waiting for the GIL while the node runs is no cost to the node.
                start_ns = time.thread_time_ns()
                try:
                    self._show(entry)
                except Exception as e:  # the view must never take the node down
                    with self._lock:
                        self.stats.errors += 1
                    self._bad.warning("view", f"view: {e!r}")
                with self._lock:
                    self.stats.busy_ns += time.thread_time_ns() - start_ns

    def _next(self) -> ViewFrame | ViewMessage | None:
        """The oldest entry of the fullest queue (frames do not starve diagnostics)."""
        with self._lock:
            queue = max(self._queues.values(), key=len, default=None)
            return queue.popleft() if queue else None

    def _show(self, entry: ViewFrame | ViewMessage) -> None:
        entries = self._frame(entry) if isinstance(entry, ViewFrame) else self._message(entry)
        for topic, log_time_ns, convert in entries:
            self._send(topic, log_time_ns, convert)

    def _channel(self, topic: str, schema: FoxgloveSchema) -> foxglove.Channel:
        """A new channel for `topic` (replacing one of another schema)."""
        import foxglove  # noqa: PLC0415

        known = self._channels.get(topic)
        if known is not None:
            known[0].close()
        channel = foxglove.Channel(
            topic,
            schema=foxglove.Schema(name=schema.name, encoding=schema.encoding, data=schema.data),
            message_encoding=schema.message_encoding,
            context=self._context,
        )
        self._channels[topic] = (channel, schema.name)
        return channel

    def _send(self, topic: str, log_time_ns: int, convert: Callable[[], FoxgloveMessage]) -> None:
        known = self._channels.get(topic)
        if known is not None and not known[0].has_sinks():
            return
        try:
            fox = convert()
        except Exception as e:
            with self._lock:
                self.stats.errors += 1
            self._bad.warning(f"convert:{topic}", f"view: {topic}: not shown: {e}")
            return
        if known is None or known[1] != fox.schema_name:
            schema = FoxgloveSchema(
                fox.schema_name, fox.schema_encoding, fox.schema_data, fox.message_encoding
            )
            self._channel(topic, schema)
            # Just advertised: no client can have subscribed yet.
            return
        known[0].log(fox.payload, log_time=max(log_time_ns, 0))
        with self._lock:
            self.stats.sent += 1

    def _frame(self, frame: ViewFrame) -> Iterator[_Entry]:
        """A processed sweep's messages, the sensors first (a client shows a frame's boxes
        over its points); only its timings when the frame is not due (`rate_hz`)."""
        topics = self.topics
        detections = frame.detections
        stamp_ns = detections.header.stamp_ns
        if not self._due(_FRAME, stamp_ns):
            yield self.topics.timings, stamp_ns, functools.partial(timings_foxglove, detections)
            return
        bundle = frame.bundle
        if bundle is not None:
            lidar = bundle.lidar
            yield self._sensor_entry(lidar.header.stream, lidar)
            for topic, camera in bundle.cameras.items():
                yield self._sensor_entry(topic, camera)
            if bundle.gnss is not None:
                gnss = bundle.gnss
                yield (
                    topics.gnss,
                    gnss.header.stamp_ns,
                    functools.partial(to_foxglove, gnss, topics.gnss),
                )
            rig = bundle.rig
            # A rig seldom changes: sent when it does, and once a second for new clients.
            now = time.monotonic()
            if rig is not self._rig_sent or now - self._rig_sent_at >= _RIG_PERIOD_S:
                self._rig_sent, self._rig_sent_at = rig, now
                yield topics.rig, stamp_ns, lambda: from_protobuf(rig_transforms(rig, stamp_ns))
            pose = bundle.ego_pose
            if pose is not None and not pose.stale:
                world = world_from_vehicle(pose, rig.gnss_lever_arm_m)
                vehicle = detections.header.frame_id or "vehicle"
                yield (
                    topics.ego_pose,
                    stamp_ns,
                    lambda: from_protobuf(ego_transforms(world, stamp_ns, WORLD_FRAME, vehicle)),
                )
        yield from self._outputs(detections)
        if frame.tracks is not None:
            tracks = frame.tracks
            yield topics.tracks, stamp_ns, functools.partial(to_foxglove, tracks, topics.tracks)

    def _outputs(self, detections: DetectionList) -> Iterator[_Entry]:
        topic = self.topics.detections
        stamp_ns = detections.header.stamp_ns
        yield topic, stamp_ns, functools.partial(to_foxglove, detections, topic)
        yield self.topics.timings, stamp_ns, functools.partial(timings_foxglove, detections)

    def _message(self, item: ViewMessage) -> Iterator[_Entry]:
        """One received message's channels; a running node's GNSS fixes and rig give the ego
        pose at each DetectionList's stamp (ENU around the first fix the view received)."""
        msg, topic = item.message, item.topic
        stamp_ns = msg.header.stamp_ns
        if isinstance(msg, DetectionList):
            if not self._due(topic, stamp_ns):
                yield self.topics.timings, stamp_ns, functools.partial(timings_foxglove, msg)
                return
            yield from self._outputs(msg)
            pose = self._ego.pose_at(stamp_ns)
            if pose is not None and not pose.stale:
                arm = None if self._rig is None else self._rig.gnss_lever_arm_m
                world = world_from_vehicle(pose, arm)
                vehicle = msg.header.frame_id or "vehicle"
                yield (
                    self.topics.ego_pose,
                    stamp_ns,
                    lambda: from_protobuf(ego_transforms(world, stamp_ns, WORLD_FRAME, vehicle)),
                )
            return
        if isinstance(msg, LidarSweep | CameraFrame):
            if self._due(topic, stamp_ns):
                yield self._sensor_entry(topic, msg)
            return
        if isinstance(msg, TrackList) and not self._due(topic, stamp_ns):
            return
        if isinstance(msg, GnssFix):
            self._ego.add(msg)
        elif isinstance(msg, RigMessage):
            # A rig it rejects is logged by to_foxglove, which shows no transforms for it.
            with contextlib.suppress(CalibrationError, ValueError, TypeError, KeyError):
                self._rig = Rig.from_dict(msg.rig, source=topic)
        yield topic, stamp_ns, functools.partial(to_foxglove, msg, topic)

    def _due(self, key: str, stamp_ns: int) -> bool:
        """Whether the frame (`_FRAME`) or the message on topic `key` stamped `stamp_ns` is
        shown: at most `rate_hz` a second by stamps; a stamp that goes back (a replay started
        again) starts over."""
        rate_hz = self.config.rate_hz
        if rate_hz <= 0.0:
            return True
        last_ns = self._shown.get(key)
        # 10% early still counts: a 10 Hz sensor's jitter must not halve a 5 Hz view.
        if last_ns is not None and 0 <= stamp_ns - last_ns < 0.9e9 / rate_hz:
            return False
        self._shown[key] = stamp_ns
        return True

    def _sensor_entry(self, topic: str, msg: LidarSweep | CameraFrame) -> _Entry:
        shown = self._thinned(msg) if isinstance(msg, LidarSweep) else self._scaled(msg)
        return topic, msg.header.stamp_ns, functools.partial(to_foxglove, shown, topic)

    def _scaled(self, frame: CameraFrame) -> CameraFrame:
        scale = self.config.image_scale
        image = frame.image
        if scale >= 1.0 or image is None:
            return frame
        height, width = image.shape[:2]
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return dataclasses.replace(frame, image=np.asarray(small, dtype=np.uint8))

    def _thinned(self, sweep: LidarSweep) -> LidarSweep:
        """`sweep` with every k-th point, at most `max_points` (views, not copies: the
        conversion copies what it sends once)."""
        limit = self.config.max_points
        count = int(sweep.points.shape[0])
        if limit == 0 or count <= limit:
            return sweep
        step = -(-count // limit)
        offsets = sweep.point_time_offsets_ns
        return dataclasses.replace(
            sweep,
            points=sweep.points[::step],
            point_time_offsets_ns=None if offsets is None else offsets[::step],
        )
