"""The on-vehicle process: ZeroMQ sockets and two threads around the socket-free `NodeCore`.

Threads: the receiver owns the SUB sockets and hands each received message to the core with its
host receive time, then passes the bundles the core made ready (or timed out, polled every
`RECEIVE_POLL_NS`) to the worker; with `pipeline.camera_ahead` (perception.node.ahead) the core
offers each camera frame it filed to a camera thread that encodes it before its sweep is in; the
worker (the caller of `run`) owns the PUB socket, hands the ready bundles to the core's processing
side and publishes what comes out, plus the core's typed Diagnostics at 1 Hz. Receiving never waits
for inference. A worker that falls behind gets several ready bundles at once; the core processes
the newest and counts the others as skipped. `queue_wait` is how long the newest ready bundle
waited for the worker. The calibration monitor (perception.node.calibration) runs on a third
thread, started with its first sweep: the worker hands it a due sweep after publishing, and skips
(counts, `calibration_skipped`) one while the monitor is still busy, because a search over the
monitor's window can take longer than a sweep and must never hold up the next. Its CPU time is
bounded on average (`calibration_monitor.budget_ms_per_sweep`,
perception.node.calibration.CpuBudget): while it is over budget, due sweeps are passed over
(counted, `calibration_over_budget`), so a monitor that searches all the time (a scene without
evidence) cannot take the cores the pipeline needs; and it runs nicer than the pipeline
(`calibration_monitor.thread_nice`), so that while a search runs the pipeline gets the cores
first. (Offline replay runs it in line, deterministically, unbounded.)

Everything the node decides is the core's (perception.node.core): this module adds only the
sockets, the threads, the watchdog, the real-time settings and the measured queue and publish
times. Messages the subscriber refuses while receiving (it checks the core's limits) are
counted by the core; an output that cannot be encoded or sent is counted and dropped
(`publish_errors`).

No exception escapes a thread: each receive and each worker iteration is guarded, counted
(`loop_errors`) and logged at a bounded rate. A watchdog thread checks both loops' heartbeats:
a receiver that died or stalled for `watchdog.stall_timeout_s` is replaced by a new one with
sockets of its own (counted: `receiver_restarts`); a worker stalled that long (an engine that
hangs) cannot be stopped from outside in Python, so the process exits with `EXIT_STALLED` and
a one-line log, for the service manager (systemd `Restart=on-failure`) to restart it.

Access: the outputs endpoint is bound as perception.io.transport binds (an ipc endpoint another
live process holds is refused; the socket file is removed at exit); with `security.curve` the
tcp sockets use CURVE and the handshakes they refuse are counted on diagnostics
(`rejected_publishers`, `rejected_subscribers`). A tcp input whose host does not resolve, which
libzmq retries in silence, is logged and noted on diagnostics (perception.node.input_hosts).

Receive times are host wall time as of the node's start, advanced by the monotonic clock
(`receive_clock_ns`): taken the moment `recv` returns, before decoding, they never step when the
wall clock is stepped (NTP), so a bundle's timeout is never stretched by a step back, and the
sensor clock estimates see a host clock step as the jump it is for them. The receiver tells the
core whether it is caught up (no message waiting, and no stall just before): while it drains a
backlog, a sensor whose messages are in it is not taken for dead.

Real-time settings (perception.node.realtime) are applied after warm-up; garbage collection is
held while a frame is processed and published.

Optional, off by default: a live view (perception.node.view) and a Prometheus endpoint
(perception.node.metrics), started by the caller. Once a frame's outputs are published the
worker hands the view the frame (an append to its bounded queue: the view converts and sends
on its own thread) and observes the timings into the metrics' histograms; each Diagnostics
goes to both.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from calibration import Rig
from perception.config import NodeConfig
from perception.errors import TransportError, WireError
from perception.io.curve import CurveKeys, curve_keys_for
from perception.io.transport import Publisher, Subscriber
from perception.msgs.types import DetectionList, Diagnostics, Message
from perception.node.ahead import CameraAhead
from perception.node.calibration import CpuBudget
from perception.node.core import RECEIVE_POLL_NS, NodeCore, NodeCounters, ReadyBundle
from perception.node.input_hosts import InputHosts
from perception.node.metrics import NodeMetrics
from perception.node.realtime import apply_realtime, gc_held, lower_this_thread
from perception.node.view import FoxgloveView, ViewFrame, ViewMessage
from perception.pipeline import Pipeline
from perception.pipeline.pipeline import StepFrame
from perception.ratelimit import RateLimitedLogger

__all__ = ["EXIT_STALLED", "Node"]

log = logging.getLogger("perception.node")

_DIAGNOSTICS_PERIOD_NS = 1_000_000_000
#: The exit code of a node whose worker stalled (EX_SOFTWARE): a service manager restarts it.
EXIT_STALLED = 70
_WATCHDOG_PERIOD_S = 0.25


class _Heartbeat:
    """The monotonic time a loop last went round; `busy` while it is inside one step."""

    def __init__(self) -> None:
        self.beat_ns = time.monotonic_ns()

    def beat(self) -> None:
        self.beat_ns = time.monotonic_ns()

    def age_s(self) -> float:
        return (time.monotonic_ns() - self.beat_ns) / 1e9


# A receiver turn this much longer than a poll is a stall (a slow message, a stopped process);
# for a while after one, ZeroMQ may not yet have moved into the sockets what the transport
# still holds, so empty sockets do not yet mean that nothing is waiting.
_STALL_NS = 6 * RECEIVE_POLL_NS
_SETTLE_NS = 5 * RECEIVE_POLL_NS


class _ReceiveClock:
    """Host wall time at construction, advanced by the monotonic clock (see the module
    docstring)."""

    def __init__(self) -> None:
        self._offset_ns = time.time_ns() - time.monotonic_ns()

    def __call__(self) -> int:
        return time.monotonic_ns() + self._offset_ns


class Node:
    """`perception run`: sockets, threads and a watchdog around a `NodeCore`."""

    def __init__(
        self,
        config: NodeConfig,
        pipeline: Pipeline,
        default_rig: Rig | None = None,
        *,
        subscriber_factory: Callable[..., Subscriber] = Subscriber,
        curve: CurveKeys | None = None,
        view: FoxgloveView | None = None,
        metrics: NodeMetrics | None = None,
    ):
        """`curve`: the CURVE keys (default: read from `config.security`); `subscriber_factory`
        opens the input sockets (a receiver the watchdog restarts opens new ones); `view` and
        `metrics`: a started live view and metrics endpoint to feed (the caller closes them).

        Raises:
            ConfigError: `config.security` names key files that cannot be used.
        """
        self.config = config
        self.curve = curve_keys_for(config.security) if curve is None else curve
        self._subscriber_factory = subscriber_factory
        self.core = NodeCore(config, pipeline, default_rig)
        self.view = view
        self.metrics = metrics
        #: The receive clock the core is given (ns).
        self.receive_clock_ns = _ReceiveClock()
        self.ready = threading.Event()
        #: The endpoint the outputs are published on, as bound (set before `ready`).
        self.output_endpoint: str | None = None
        self._cond = threading.Condition()
        self._bad = RateLimitedLogger(log)
        self._receiver_error: BaseException | None = None
        # Bundles ready for the worker, with the monotonic time each became ready.
        self._ready: list[tuple[ReadyBundle, int]] = []
        # The receiver in charge: a replaced (stalled) one notices and leaves.
        self._receiver_generation = 0
        self._receiver: threading.Thread | None = None
        # The calibration monitor's thread (started with its first sweep) and its one slot.
        self._calibration_cond = threading.Condition()
        self._calibration_frame: StepFrame | None = None
        self._calibration_busy = False
        self._calibration_stop = False
        self._calibration_thread: threading.Thread | None = None
        self._calibration_budget = CpuBudget.of(config.calibration_monitor)
        self._receiver_beat = _Heartbeat()
        self._worker_beat = _Heartbeat()
        # Handshakes refused on the input sockets: those of replaced receivers, and the current
        # receiver's count (read by the worker for diagnostics).
        self._rejected_before = 0
        self._rejected_publishers = 0
        # Whether the tcp inputs' hosts resolve: libzmq retries one that does not in silence.
        self._input_hosts = InputHosts(config.inputs.endpoints)

    @property
    def counters(self) -> NodeCounters:
        return self.core.counters

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set. Setup failures (sockets, model) raise; per-message
        problems never do."""
        pipeline = self.core.pipeline
        # Bound before the warm-up (seconds; minutes where TensorRT builds its engines): an
        # output endpoint the node cannot bind (taken, not this machine's) is said at once.
        publisher = Publisher(
            self.config.outputs.endpoint,
            bind=True,
            hwm=self.config.outputs.high_water_mark,
            curve=self.curve,
            # The node's lists are held to its own limits (a raised max_detections).
            limits=self.config.limits,
        )
        # What it bound: the port chosen for `tcp://host:*` or `:0`, which clients must be told.
        self.output_endpoint = publisher.last_endpoint
        try:
            pipeline.warm_up()
            if self.config.pipeline.camera_ahead and pipeline.detector.batch_size == 1:
                # A few frames per camera: those of the sweeps about to complete.
                kept = 4 * max(1, len(self.config.inputs.camera_topics))
                self.core.camera_ahead = CameraAhead(pipeline, max_kept=kept)
            self.core.realtime = apply_realtime(self.config.realtime)
            for refusal in self.core.realtime.refused:
                log.warning("real-time setting not applied: %s", refusal)
            self._input_hosts.start()
            subscriber_ready = self._start_receiver(stop)
            if not subscriber_ready.wait(10.0) or self._receiver_error is not None:
                raise self._receiver_error or RuntimeError("receiver did not start")
            self.ready.set()
            watchdog = threading.Thread(
                target=self._watch, args=(stop,), name="watchdog", daemon=True
            )
            watchdog.start()
            self._work_loop(stop, publisher)
        finally:
            stop.set()
            self._input_hosts.close()
            self._stop_calibration()
            if self._receiver is not None:
                self._receiver.join(timeout=5.0)
            if self.core.camera_ahead is not None:
                self.core.camera_ahead.close()
            self.core.record_rejections(self._rejected_publishers, publisher.rejected_peers)
            publisher.close()

    # -- receiver thread -------------------------------------------------------------------

    def _start_receiver(self, stop: threading.Event) -> threading.Event:
        self._receiver_generation += 1
        subscriber_ready = threading.Event()
        self._receiver_beat.beat()
        self._receiver = threading.Thread(
            target=self._receive_loop,
            args=(stop, subscriber_ready, self._receiver_generation),
            name=f"receiver-{self._receiver_generation}",
            daemon=True,
        )
        self._receiver.start()
        return subscriber_ready

    def _receive_loop(self, stop: threading.Event, ready: threading.Event, generation: int) -> None:
        inputs = self.config.inputs
        topics = (inputs.lidar_topic, *inputs.camera_topics, inputs.gnss_topic, inputs.rig_topic)
        try:
            subscriber = self._subscriber_factory(
                inputs.endpoints,
                topics,
                hwm=inputs.high_water_mark,
                limits=self.core.limits,
                priority=(inputs.rig_topic, inputs.gnss_topic),
                curve=self.curve,
                on_refused=self.core.on_refused,
                on_disconnect=self.core.on_disconnect,
            )
        except BaseException as e:
            self._receiver_error = e
            ready.set()
            return
        ready.set()
        self._turn_ns = self._settle_ns = self.receive_clock_ns()
        with subscriber:
            try:
                self._serve(subscriber, stop, generation)
            finally:
                self._rejected_before += subscriber.rejected_peers

    def _serve(self, subscriber: Subscriber, stop: threading.Event, generation: int) -> None:
        """Receive until stopped, replaced, or the sockets fail."""
        while not stop.is_set() and generation == self._receiver_generation:
            self._receiver_beat.beat()
            try:
                self._receive_once(subscriber)
            except TransportError as e:
                # The sockets are broken: leave; the watchdog starts a receiver with new ones.
                log.error("receiver: %s; the watchdog will restart it", e)
                return
            except Exception as e:  # one bad message must not stop the receiver
                self.core.count_loop_error()
                self._bad.warning("receiver", f"receiver: {e!r}")

    def _receive_once(self, subscriber: Subscriber) -> None:
        frames = subscriber.recv(timeout_ms=RECEIVE_POLL_NS // 1_000_000)
        self._rejected_publishers = self._rejected_before + subscriber.rejected_peers
        now_ns = self.receive_clock_ns()
        if now_ns - self._turn_ns > _STALL_NS:
            self._settle_ns = now_ns + _SETTLE_NS
        self._turn_ns = now_ns
        # While a backlog drains (after a stall), silence is not yet death.
        caught_up = now_ns >= self._settle_ns and not subscriber.pending()
        if frames is not None:
            bundles = self.core.on_frames(frames, now_ns, caught_up=caught_up)
        else:
            # No message: a bundle may be due at its timeout.
            bundles = self.core.poll(now_ns, caught_up=caught_up)
        if bundles:
            ready_mono_ns = time.monotonic_ns()
            with self._cond:
                self._ready += [(b, ready_mono_ns) for b in bundles]
                self._cond.notify()

    # -- watchdog thread -------------------------------------------------------------------

    def _watch(self, stop: threading.Event) -> None:
        stall_s = self.config.watchdog.stall_timeout_s
        while not stop.wait(_WATCHDOG_PERIOD_S):
            receiver = self._receiver
            dead = receiver is None or not receiver.is_alive()
            stalled = self._receiver_beat.age_s() > stall_s
            if dead or stalled:
                what = "stopped" if dead else f"stalled for {self._receiver_beat.age_s():.1f} s"
                self._bad.warning("watchdog", f"watchdog: the receiver {what}; starting a new one")
                self.core.count_receiver_restart()
                self._start_receiver(stop)
            if self._worker_beat.age_s() > stall_s:
                log.critical(
                    "watchdog: the worker stalled for %.1f s (an engine or the pipeline hangs); "
                    "exiting with %d for the service manager to restart the node",
                    self._worker_beat.age_s(),
                    EXIT_STALLED,
                )
                logging.shutdown()
                sys.stderr.flush()
                # The stalled thread cannot be interrupted: only the process can end.
                os._exit(EXIT_STALLED)

    # -- worker thread ---------------------------------------------------------------------

    def _work_loop(self, stop: threading.Event, publisher: Publisher) -> None:
        next_diagnostics_ns = time.monotonic_ns()
        while not stop.is_set():
            self._worker_beat.beat()
            try:
                next_diagnostics_ns = self._work_once(publisher, next_diagnostics_ns)
            except Exception as e:  # one bad frame or publish must not stop the worker
                self.core.count_loop_error()
                self._bad.warning("worker", f"worker: {e!r}")

    def _work_once(self, publisher: Publisher, next_diagnostics_ns: int) -> int:
        """One round: diagnostics when due, then the ready bundles; the next diagnostics time."""
        with self._cond:
            if not self._ready:
                self._cond.wait(timeout=0.02)
            ready, self._ready = self._ready, []
        if time.monotonic_ns() >= next_diagnostics_ns:
            next_diagnostics_ns += _DIAGNOSTICS_PERIOD_NS
            self.core.record_rejections(self._rejected_publishers, publisher.rejected_peers)
            self.core.record_input_notes(self._input_hosts.notes())
            diagnostics = self.core.diagnostics(self.receive_clock_ns())
            self._send(publisher, diagnostics, "diagnostics")
            self._observe_diagnostics(diagnostics)
        if not ready:
            return next_diagnostics_ns
        queue_wait_ns = time.monotonic_ns() - max(mono for _, mono in ready)
        with gc_held(self.config.realtime.gc_hold):
            detections = self.core.on_bundles([b for b, _ in ready], queue_wait_ns=queue_wait_ns)
            if detections is not None:
                self._publish(publisher, detections)
        return next_diagnostics_ns

    def _publish(self, publisher: Publisher, detections: DetectionList) -> None:
        start = time.perf_counter_ns()
        self._send(publisher, detections, "detections", self.config.outputs.detections_topic)
        # The publish stage is the DetectionList's own: the TrackList goes out after it, off
        # the detections' path (counted in, it made the stages add up to more than the frame).
        self.core.record_publish(time.perf_counter_ns() - start)
        # Tracked once the detections are out: a planner taking them does not wait for it.
        tracks = self.core.take_tracks()
        if tracks is not None:
            self._send(publisher, tracks, "tracks", self.config.outputs.tracks_topic)
        # After the outputs went out: neither adds to this frame's latency.
        if self.view is not None:
            self.view.offer("frame", ViewFrame(self.core.last_bundle, detections, tracks))
        if self.metrics is not None:
            self.metrics.observe(detections)
        frame = self.core.take_calibration_frame()
        if frame is not None:
            self._offer_calibration(frame)

    # -- calibration monitor thread --------------------------------------------------------

    def _offer_calibration(self, frame: StepFrame) -> None:
        """Hand a sweep to the monitor's thread; while it is still on an earlier one the sweep
        is skipped (counted): a search over its window may take longer than a sweep, and must
        never hold up the next one. While the monitor is over its CPU budget the sweep is
        passed over (counted apart)."""
        with self._calibration_cond:
            self._calibration_budget.accrue(self.config.calibration_monitor.every_n_sweeps)
            if not self._calibration_budget.allows():
                self.core.defer_calibration_frame()
                return
            if self._calibration_frame is not None or self._calibration_busy:
                self.core.skip_calibration_frame()
                return
            self._calibration_frame = frame
            self._calibration_cond.notify()
        if self._calibration_thread is None:
            self._calibration_thread = threading.Thread(
                target=self._calibration_loop, name="calibration", daemon=True
            )
            self._calibration_thread.start()

    def _calibration_loop(self) -> None:
        refused = lower_this_thread(self.config.calibration_monitor.thread_nice)
        if refused is not None:
            log.warning("calibration monitor thread not lowered: %s", refused)
        while True:
            with self._calibration_cond:
                while self._calibration_frame is None and not self._calibration_stop:
                    self._calibration_cond.wait()
                frame, self._calibration_frame = self._calibration_frame, None
                if self._calibration_stop or frame is None:
                    return
                self._calibration_busy = True
            # The budget is of CPU time: a monitor held back by the pipeline (its thread is
            # nicer, and shares the GIL) costs the cores nothing while it waits, and counting
            # that wait would pass over sweeps it could have used.
            cpu_ns = 0
            try:
                cpu_ns = self.core.observe_calibration(frame)
            finally:
                with self._calibration_cond:
                    self._calibration_busy = False
                    self._calibration_budget.spend(cpu_ns)

    def _stop_calibration(self) -> None:
        with self._calibration_cond:
            self._calibration_stop = True
            self._calibration_cond.notify()
        if self._calibration_thread is not None:
            self._calibration_thread.join(timeout=5.0)

    def _observe_diagnostics(self, diagnostics: Diagnostics) -> None:
        if self.view is not None:
            topic = self.config.outputs.diagnostics_topic
            self.view.offer("diagnostics", ViewMessage(topic, diagnostics))
        if self.metrics is not None:
            self.metrics.update(diagnostics)

    def _send(
        self, publisher: Publisher, msg: Message, what: str, topic: str | None = None
    ) -> None:
        """Send one output; one that cannot be encoded (a value out of range) or sent is
        counted and dropped: it must not stop the node."""
        try:
            publisher.send(msg, topic=topic)
        except (WireError, TransportError) as e:
            self.core.on_publish_error(what, e)
