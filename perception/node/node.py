"""The on-vehicle process: ZeroMQ sockets and two threads around the socket-free `NodeCore`.

Threads: the receiver owns the SUB sockets and hands each received message to the core with its
host receive time, then passes the bundles the core made ready (or timed out, polled every
`RECEIVE_POLL_NS`) to the worker; the worker (the caller of `run`) owns the PUB socket, hands
the ready bundles to the core's processing side and publishes what comes out, plus the core's
typed Diagnostics at 1 Hz. Receiving never waits for inference. A worker that falls behind gets
several ready bundles at once; the core processes the newest and counts the others as skipped.
`queue_wait` is how long the ready bundles waited for the worker.

Everything the node decides is the core's (perception.node.core): this module adds only the
sockets, the threads, the real-time settings and the measured queue and publish times. No
exception escapes a thread: per-message problems are counted by the core; a receiver that
cannot open its sockets stops the node with that error.

Receive times are host wall time as of the node's start, advanced by the monotonic clock
(`receive_clock_ns`): taken the moment `recv` returns, before decoding, they never step when the
wall clock is stepped (NTP), so a bundle's timeout is never stretched by a step back, and the
sensor clock estimates see a host clock step as the jump it is for them. The receiver tells the
core whether it is caught up (no message waiting, and no stall just before): while it drains a
backlog, a sensor whose messages are in it is not taken for dead.

Real-time settings (perception.node.realtime) are applied after warm-up; garbage collection is
held while a frame is processed and published.
"""

from __future__ import annotations

import logging
import threading
import time

from calibration import Rig
from perception.config import NodeConfig
from perception.io.transport import Publisher, Subscriber
from perception.msgs.types import DetectionList
from perception.node.core import RECEIVE_POLL_NS, NodeCore, NodeCounters, ReadyBundle
from perception.node.realtime import apply_realtime, gc_held
from perception.pipeline import Pipeline

__all__ = ["Node"]

log = logging.getLogger("perception.node")

_DIAGNOSTICS_PERIOD_NS = 1_000_000_000
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
    """`perception run`: sockets and threads around a `NodeCore`."""

    def __init__(self, config: NodeConfig, pipeline: Pipeline, default_rig: Rig | None = None):
        self.config = config
        self.core = NodeCore(config, pipeline, default_rig)
        #: The receive clock the core is given (ns).
        self.receive_clock_ns = _ReceiveClock()
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self._receiver_error: BaseException | None = None
        # Bundles ready for the worker, with the monotonic time each became ready.
        self._ready: list[tuple[ReadyBundle, int]] = []

    @property
    def counters(self) -> NodeCounters:
        return self.core.counters

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set. Setup failures (sockets, model) raise; per-message
        problems never do."""
        self.core.pipeline.warm_up()
        self.core.realtime = apply_realtime(self.config.realtime)
        for refusal in self.core.realtime.refused:
            log.warning("real-time setting not applied: %s", refusal)
        publisher = Publisher(
            self.config.outputs.endpoint, bind=True, hwm=self.config.outputs.high_water_mark
        )
        subscriber_ready = threading.Event()
        receiver = threading.Thread(
            target=self._receive_loop, args=(stop, subscriber_ready), name="receiver", daemon=True
        )
        receiver.start()
        try:
            if not subscriber_ready.wait(10.0) or self._receiver_error is not None:
                raise self._receiver_error or RuntimeError("receiver did not start")
            self.ready.set()
            self._work_loop(stop, publisher)
        finally:
            stop.set()
            receiver.join(timeout=5.0)
            publisher.close()

    # -- receiver thread -------------------------------------------------------------------

    def _receive_loop(self, stop: threading.Event, ready: threading.Event) -> None:
        inputs = self.config.inputs
        topics = (inputs.lidar_topic, *inputs.camera_topics, inputs.gnss_topic, inputs.rig_topic)
        try:
            subscriber = Subscriber(
                inputs.endpoints,
                topics,
                hwm=inputs.high_water_mark,
                max_message_size=inputs.max_message_bytes,
                priority=(inputs.rig_topic, inputs.gnss_topic),
            )
        except BaseException as e:
            self._receiver_error = e
            ready.set()
            return
        ready.set()
        turn_ns = settle_ns = self.receive_clock_ns()
        with subscriber:
            while not stop.is_set():
                frames = subscriber.recv(timeout_ms=RECEIVE_POLL_NS // 1_000_000)
                now_ns = self.receive_clock_ns()
                if now_ns - turn_ns > _STALL_NS:
                    settle_ns = now_ns + _SETTLE_NS
                turn_ns = now_ns
                # While a backlog drains (after a stall), silence is not yet death.
                caught_up = now_ns >= settle_ns and not subscriber.pending()
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

    # -- worker thread ---------------------------------------------------------------------

    def _work_loop(self, stop: threading.Event, publisher: Publisher) -> None:
        next_diagnostics_ns = time.monotonic_ns()
        while not stop.is_set():
            with self._cond:
                if not self._ready:
                    self._cond.wait(timeout=0.02)
                ready, self._ready = self._ready, []
            if time.monotonic_ns() >= next_diagnostics_ns:
                publisher.send(self.core.diagnostics(self.receive_clock_ns()))
                next_diagnostics_ns += _DIAGNOSTICS_PERIOD_NS
            if not ready:
                continue
            queue_wait_ns = time.monotonic_ns() - max(mono for _, mono in ready)
            with gc_held(self.config.realtime.gc_hold):
                detections = self.core.on_bundles(
                    [b for b, _ in ready], queue_wait_ns=queue_wait_ns
                )
                if detections is not None:
                    self._publish(publisher, detections)

    def _publish(self, publisher: Publisher, detections: DetectionList) -> None:
        start = time.perf_counter_ns()
        publisher.send(detections, topic=self.config.outputs.detections_topic)
        self.core.record_publish(time.perf_counter_ns() - start)
