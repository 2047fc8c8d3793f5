"""The node's Prometheus endpoint (prometheus-client): `http://HOST:PORT/metrics`.

Per frame, the worker observes the published DetectionList's timings into histograms (a
bisect and an add per stage, after the outputs went out). The counters are read at scrape time
from the node's last Diagnostics (made at 1 Hz for the diagnostics topic anyway), so the hot
path pays nothing for them and the endpoint says what the diagnostics topic says:

- `perception_stage_duration_seconds{stage}` (histogram): each stage of each DetectionList
  (`timings_ns`: sync wait, decode, the engines, fusion, tracking, queue wait, publish, ...);
  `perception_latency_seconds` (histogram): sensor stamp to publish (`latency_ns`).
- `perception_<counter>_total`: every counter of the node (perception.node.NodeCounters:
  `received`, `decode_errors`, `skipped_bundles`, `budget_overruns`, `published`, ...),
  `perception_calibration_seconds_total` for the calibration monitor's time; gauges for the
  two overrun runs (`perception_consecutive_overruns`, `perception_longest_overrun_run`).
- `perception_dropped_total{reason}`: input messages dropped, by reason (`decode_error`,
  `stale_payload`, `stamp_fault`, `sync_error`, and what the synchroniser dropped: `late`,
  `duplicate`, `queue_full`, `unknown_stream`, `bad_rig`, `bad_fix`, `not_input`,
  `clock_reset`, `unmatched`, `no_rig`); `perception_stage_overruns_total{stage}`;
  `perception_sync_total{event}` (every synchroniser counter).
- Per sensor stream: `perception_sensor_alive` (0|1), `perception_sensor_rate_hz`,
  `perception_sensor_last_message_age_seconds` (NaN before its first message),
  `perception_sensor_messages_total`, `perception_sensor_outages_total`;
  `perception_inputs_status{status}` (1 for the current one of ok, degraded, stale).
- Per camera, the calibration monitor's belief (absent while it is off):
  `perception_calibration_state{camera,state}` (1 for the current one of collecting, aligned,
  drifted: alert on `state="drifted"`), the estimated correction
  `perception_calibration_correction_degrees{camera,axis}` (a rotation about the vehicle's
  x, y, z) and `perception_calibration_correction_meters{camera,axis}` with their standard
  deviations (`..._sigma_degrees`, `..._sigma_meters`; NaN where an axis is not observed),
  `perception_calibration_frames_total{camera}`, `perception_calibration_skipped_frames_total`
  and `perception_calibration_information_nats` (the evidence the window pools).
- With the live view: `perception_view_entries_total`, `perception_view_dropped_total`,
  `perception_view_sent_total`, `perception_view_errors_total`, `perception_view_busy_seconds_total`
  (the view thread's time: what it can take from the node's threads), and the viewers its gate
  closed (perception.node.view_gate): `perception_view_refused_clients_total`,
  `perception_view_timed_out_clients_total`, `perception_view_oversized_clients_total`.

Each `NodeMetrics` has a registry of its own, so several nodes (tests) run in one process.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import threading
import time
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from perception.config import MetricsConfig
from perception.errors import TransportError
from perception.io.runtime import url_host
from perception.msgs.types import DetectionList, Diagnostics
from perception.ratelimit import RateLimitedLogger

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from perception.node.view import ViewStats

__all__ = ["LATENCY_BUCKETS_S", "MAX_CLIENTS", "READ_TIMEOUT_S", "NodeMetrics"]

log = logging.getLogger(__name__)

#: Histogram buckets (s): sub-millisecond stages up to a frame 10 times over budget.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
)  # fmt: skip

# NodeCounters that are not monotonic counts: gauges.
_GAUGES = frozenset({"consecutive_overruns", "longest_overrun_run"})
# Node counters of nanoseconds, exported in seconds: (family, help).
_SECONDS = {
    "calibration_ns": (
        "perception_calibration_seconds",
        "Time the calibration monitor spent, after the outputs were published",
    ),
    "calibration_cpu_ns": (
        "perception_calibration_cpu_seconds",
        "CPU time the calibration monitor's thread spent (what its budget bounds)",
    ),
}
# Node counters of input messages dropped, by reason.
_NODE_DROPS = {
    "decode_errors": "decode_error",
    "stale_payloads": "stale_payload",
    "stamp_faults": "stamp_fault",
    "sync_errors": "sync_error",
}
# Synchroniser counters (perception.sync.SyncStats) of messages it dropped, by reason.
_SYNC_DROPS = {
    "late_messages": "late",
    "duplicate_messages": "duplicate",
    "dropped_sweeps_queue_full": "queue_full",
    "dropped_cameras_queue_full": "queue_full",
    "unknown_streams": "unknown_stream",
    "bad_rigs": "bad_rig",
    "bad_fixes": "bad_fix",
    "not_inputs": "not_input",
    "dropped_sweeps_clock_reset": "clock_reset",
    "dropped_cameras_clock_reset": "clock_reset",
    "dropped_fixes_clock_reset": "clock_reset",
    "dropped_fixes_position_jump": "position_jump",
    "dropped_sweeps_unmatched": "unmatched",
    "dropped_cameras_unmatched": "unmatched",
    "dropped_sweeps_no_rig": "no_rig",
}
_STATUSES = ("ok", "degraded", "stale")
# calibration.monitor.MonitorState's values (not imported: the node's metrics stay light).
_CALIBRATION_STATES = ("collecting", "aligned", "drifted")
_AXES = ("x", "y", "z")


class NodeMetrics:
    """Prometheus metrics of one node (see the module docstring). `observe` (per frame) and
    `update` (per Diagnostics) are called by the node's worker; `start` serves them."""

    def __init__(self, config: MetricsConfig, view_stats: ViewStats | None = None) -> None:
        """`view_stats`: the live view's counters (`FoxgloveView.stats`, which the view keeps
        up to date), read at scrape time; None: no view."""
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.stages = Histogram(
            "perception_stage_duration_seconds",
            "Duration of each stage of each published DetectionList (its timings)",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.latency = Histogram(
            "perception_latency_seconds",
            "Sensor stamp (on the host clock) to publish, per DetectionList",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        # The children per stage, made once: `labels()` takes a lock and a dict lookup.
        self._stage: dict[str, Histogram] = {}
        self._snapshot = _Snapshot(view_stats)
        self.registry.register(self._snapshot)
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    def observe(self, detections: DetectionList) -> None:
        """A published DetectionList's timings and latency (the worker, after publishing)."""
        stages = self._stage
        for stage, ns in detections.timings_ns.items():
            child = stages.get(stage)
            if child is None:
                child = stages[stage] = self.stages.labels(stage)
            child.observe(ns * 1e-9)
        self.latency.observe(detections.latency_ns * 1e-9)

    def update(self, diagnostics: Diagnostics) -> None:
        """The node's latest Diagnostics: what the counters and gauges report until the next."""
        self._snapshot.diagnostics = (diagnostics, time.monotonic_ns())

    # -- the endpoint ------------------------------------------------------------------------

    def start(self) -> None:
        """Serve `/metrics` on the configured address (a daemon thread; at most
        `MAX_CLIENTS` connections at once, each given `READ_TIMEOUT_S` to send its request).

        Raises TransportError naming the address when it cannot bind (a port in use)."""
        from prometheus_client import make_wsgi_app  # noqa: PLC0415

        host, port = self.config.host, self.config.port
        try:
            server = _BoundedServer((host, port), make_wsgi_app(self.registry))
        except OSError as e:
            raise TransportError(
                f"metrics: cannot serve on {host}:{port}: {e.strerror or e}"
            ) from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()

    @property
    def refused_clients(self) -> int:
        """Connections closed at once because `MAX_CLIENTS` were being served."""
        return 0 if self._server is None else self._server.refused

    @property
    def failed_requests(self) -> int:
        """Requests that ended in an error (a client silent past `READ_TIMEOUT_S`, a reset)."""
        return 0 if self._server is None else self._server.failed

    @property
    def port(self) -> int:
        """The port the endpoint listens on (the chosen one when configured 0)."""
        if self._server is None:
            raise RuntimeError("the metrics endpoint is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{url_host(self.config.host)}:{self.port}/metrics"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None


#: Connections the metrics endpoint serves at once; one more is closed at once (counted). A
#: scraper takes one; each held a thread and its request's headers (up to 6.5 MB) without
#: bound, and 200 held ones, closed together, were served at once in the node's process: its
#: worker starved until the watchdog ended the node.
MAX_CLIENTS = 16
#: How long a connection may take to send its request, and to read the answer, s.
READ_TIMEOUT_S = 5.0


class _QuietHandler(WSGIRequestHandler):
    timeout = READ_TIMEOUT_S  # the socket's timeout (socketserver.StreamRequestHandler)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: library code does not write to stderr."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A WSGI server of one thread per connection, at most `MAX_CLIENTS` at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Any) -> None:
        infos = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)
        self.address_family = infos[0][0]  # an IPv6 host is served too
        super().__init__(address, _QuietHandler)
        self.set_app(app)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.refused = 0
        #: Requests that ended in an error (a client silent past the read timeout, a reset).
        self.failed = 0
        self._log = RateLimitedLogger(log)
        # The handlers' threads fail together (clients timed out at once): the count and the
        # rate limit are shared.
        self._failed_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self._log.warning(
                "refused", f"metrics: a connection refused: {MAX_CLIENTS} are being served"
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's own printed a traceback on the node's stderr for each: a client that
        # stalls or hangs up is the client's fault, counted and said at a bounded rate.
        error = sys.exception()
        why = "timed out" if isinstance(error, TimeoutError) else f"{type(error).__name__}: {error}"
        host, port = client_address[:2]
        with self._failed_lock:
            self.failed += 1
            self._log.warning(
                "failed", f"metrics: a request from {url_host(host)}:{port} ended unanswered: {why}"
            )

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Snapshot(Collector):
    """The metrics read from the last Diagnostics (and the view's counters) at scrape time."""

    def __init__(self, view_stats: ViewStats | None) -> None:
        # (diagnostics, monotonic ns when it was handed over); swapped whole, read whole.
        self.diagnostics: tuple[Diagnostics, int] | None = None
        self._view_stats = view_stats

    def describe(self) -> list[Metric]:
        # Families vary with the node's counters: described at collect time only.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._view()
        latest = self.diagnostics
        if latest is None:
            return
        diagnostics, handed_ns = latest
        yield from _counters(diagnostics)
        yield from _sensors(diagnostics, (time.monotonic_ns() - handed_ns) * 1e-9)
        if diagnostics.calibration:
            yield from _calibration(diagnostics)

    def _view(self) -> Iterator[Metric]:
        if self._view_stats is None:
            return
        stats = self._view_stats
        for name, value, text in (
            ("entries", stats.offered, "Entries (frames, messages) handed to the live view"),
            ("dropped", stats.dropped, "Entries the live view's full queue dropped"),
            ("sent", stats.sent, "Messages the live view sent to subscribed clients"),
            ("errors", stats.errors, "Messages the live view could not convert"),
            ("refused_clients", stats.refused_clients, "Viewers refused: too many connected"),
            (
                "timed_out_clients",
                stats.timed_out_clients,
                "Viewers closed without a WebSocket handshake in time",
            ),
            (
                "oversized_clients",
                stats.oversized_clients,
                "Viewers closed for a request or a message over the view's limit",
            ),
        ):
            yield CounterMetricFamily(f"perception_view_{name}", text, value=value)
        yield CounterMetricFamily(
            "perception_view_busy_seconds",
            "CPU time the live view's thread spent converting and sending",
            value=stats.busy_ns * 1e-9,
        )


def _counters(d: Diagnostics) -> Iterator[Metric]:
    for name, value in d.counters.items():
        if name in _GAUGES:
            yield GaugeMetricFamily(f"perception_{name}", f"Node counter {name}", value=value)
        elif name in _SECONDS:
            seconds, text = _SECONDS[name]
            yield CounterMetricFamily(seconds, text, value=value * 1e-9)
        else:
            yield CounterMetricFamily(f"perception_{name}", f"Node counter {name}", value=value)
    dropped: dict[str, int] = {}
    for name, reason in _NODE_DROPS.items():
        dropped[reason] = dropped.get(reason, 0) + d.counters.get(name, 0)
    for name, reason in _SYNC_DROPS.items():
        dropped[reason] = dropped.get(reason, 0) + d.sync.get(name, 0)
    family = CounterMetricFamily(
        "perception_dropped", "Input messages dropped, by reason", labels=["reason"]
    )
    for reason, value in dropped.items():
        family.add_metric([reason], value)
    yield family
    family = CounterMetricFamily(
        "perception_stage_overruns", "Frames over a stage's budget", labels=["stage"]
    )
    for stage, value in d.overruns_by_stage.items():
        family.add_metric([stage], value)
    yield family
    family = CounterMetricFamily("perception_sync", "Synchroniser counters", labels=["event"])
    for event, value in d.sync.items():
        family.add_metric([event], value)
    yield family


def _sensors(d: Diagnostics, since_s: float) -> Iterator[Metric]:
    """Per stream liveness; ages advanced by `since_s`, the time since `d` was made."""
    alive = GaugeMetricFamily(
        "perception_sensor_alive", "1: the sensor is alive, 0: dead", labels=["stream"]
    )
    rate = GaugeMetricFamily(
        "perception_sensor_rate_hz", "Measured message rate of the sensor", labels=["stream"]
    )
    age = GaugeMetricFamily(
        "perception_sensor_last_message_age_seconds",
        "Time since the sensor's last message was received (NaN: never)",
        labels=["stream"],
    )
    messages = CounterMetricFamily(
        "perception_sensor_messages", "Messages accepted from the sensor", labels=["stream"]
    )
    outages = CounterMetricFamily(
        "perception_sensor_outages", "Times the sensor came back from dead", labels=["stream"]
    )
    now_ns = d.header.stamp_ns
    for s in d.sensors:
        labels = [s.stream]
        alive.add_metric(labels, 1.0 if s.alive else 0.0)
        rate.add_metric(labels, s.rate_hz)
        last = s.last_receive_ns
        age.add_metric(labels, math.nan if last is None else (now_ns - last) * 1e-9 + since_s)
        messages.add_metric(labels, s.messages)
        outages.add_metric(labels, s.outages)
    yield from (alive, rate, age, messages, outages)
    status = GaugeMetricFamily(
        "perception_inputs_status", "1 for the inputs' current status", labels=["status"]
    )
    for name in _STATUSES:
        status.add_metric([name], 1.0 if d.status == name else 0.0)
    yield status


def _calibration(d: Diagnostics) -> Iterator[Metric]:
    """Per camera, the calibration monitor's state, correction and evidence."""
    state = GaugeMetricFamily(
        "perception_calibration_state",
        "1 for the calibration monitor's current state of the camera's extrinsic",
        labels=["camera", "state"],
    )
    families = {
        name: GaugeMetricFamily(name, text, labels=["camera", "axis"])
        for name, text in (
            ("perception_calibration_correction_degrees",
             "Estimated rotation correction of the camera, about the vehicle axis"),
            ("perception_calibration_correction_meters",
             "Estimated translation correction of the camera, along the vehicle axis"),
            ("perception_calibration_correction_sigma_degrees",
             "Standard deviation of the rotation correction (NaN: not observed)"),
            ("perception_calibration_correction_sigma_meters",
             "Standard deviation of the translation correction (NaN: not observed)"),
        )
    }  # fmt: skip
    frames = CounterMetricFamily(
        "perception_calibration_frames", "Frames the calibration monitor used", labels=["camera"]
    )
    skipped = CounterMetricFamily(
        "perception_calibration_skipped_frames",
        "Frames the calibration monitor skipped (no evidence in them, or not moving)",
        labels=["camera"],
    )
    information = GaugeMetricFamily(
        "perception_calibration_information_nats",
        "Lidar-camera mutual information the monitor's window pools at its centre",
        labels=["camera"],
    )
    for c in d.calibration:
        for name in _CALIBRATION_STATES:
            state.add_metric([c.camera, name], 1.0 if c.state == name else 0.0)
        for name, values, sigma in (
            ("perception_calibration_correction_degrees", c.rotation_deg, False),
            ("perception_calibration_correction_meters", c.translation_m, False),
            ("perception_calibration_correction_sigma_degrees", c.rotation_sigma_deg, True),
            ("perception_calibration_correction_sigma_meters", c.translation_sigma_m, True),
        ):
            for axis, value in zip(_AXES, values, strict=True):
                # The message's -1 for an axis not observed is no deviation: NaN here.
                shown = math.nan if sigma and value < 0 else value
                families[name].add_metric([c.camera, axis], shown)
        frames.add_metric([c.camera], c.frames)
        skipped.add_metric([c.camera], c.skipped)
        information.add_metric([c.camera], c.score)
    yield state
    yield from families.values()
    yield from (frames, skipped, information)
