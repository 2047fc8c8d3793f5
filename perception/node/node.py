"""The on-vehicle process: sockets in, `Pipeline.step` on a worker thread, detections out.

Threads: the receiver owns the SUB sockets, decodes and files each message into the
synchroniser and hands the bundles it completes (or times out) to the worker; the worker (the
caller of `run`) owns the PUB socket, turns ready bundles into DetectionLists and publishes them.
Each DetectionList's `sync_wait` is the time from its sweep's arrival to its bundle being ready,
and `queue_wait` the time the ready bundle waited for the worker (0 unless the node is behind).
Receiving never waits for inference. When the worker falls behind, it processes the newest
ready bundle and counts the ones it skipped; published stamps only move forward.

A bad message (undecodable, invalid rig, a bundle the pipeline cannot process) is dropped,
counted and logged at a bounded rate; the node goes on.

Timing: `latency_ns` is sensor-to-publish: the sweep stamp moved onto the host clock with the
lidar clock's estimated offset (perception.sync.clock; `budgets.apply_clock_offset`), to the moment
just before sending. It is the host wall time at which the sweep was received minus that stamp,
plus the monotonic time from receipt to publish, so a wall-clock step (NTP) during a frame does
not corrupt it. The lidar clock's offset is estimated from the time of each sweep's *last* point
(the sweep can only be sent once complete), so the estimate absorbs only the minimum transport
delay (sub-millisecond on ipc), not the sweep duration; until `CLOCK_MIN_SWEEPS` sweeps have
arrived the clocks are taken to agree. A message cannot contain its own publish duration, so
the `publish` stage it carries is the encode + send time of the previous DetectionList;
diagnostics carry the same figure.

Deadlines: each DetectionList is checked against the per-stage and end-to-end budgets; an overrun
clears its `budget_ok`, and is counted (per stage, consecutive, longest run) on the diagnostics
topic. Real-time settings (perception.node.realtime) are applied after warm-up; garbage
collection is held while a frame is processed and published.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import zmq

from calibration import Rig
from perception.config import NodeConfig
from perception.errors import WireError
from perception.io.transport import Publisher, Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, LidarSweep, SyncedBundle, sweep_end_ns
from perception.node.realtime import RealtimeStatus, apply_realtime, gc_held
from perception.pipeline import Pipeline
from perception.ratelimit import RateLimitedLogger
from perception.sync import Bundler, Filed
from perception.sync.clock import ClockMonitor

__all__ = ["Node", "NodeCounters"]

log = logging.getLogger("perception.node")

# Sweeps seen before the lidar clock's offset estimate is applied: with fewer, the estimate is a
# median of single samples rather than a lower envelope, and may exceed a sweep's transport delay.
CLOCK_MIN_SWEEPS = 16
# How long the receiver waits for a message before checking the bundles' timeouts.
_RECEIVE_POLL_MS = 10


@dataclass
class NodeCounters:
    """What the node received, dropped and published; reported on the diagnostics topic."""

    received: int = 0
    decode_errors: int = 0
    bad_rigs: int = 0
    bundles: int = 0
    skipped_bundles: int = 0
    step_errors: int = 0
    published: int = 0
    budget_overruns: int = 0
    consecutive_overruns: int = 0
    longest_overrun_run: int = 0
    overruns_by_stage: dict[str, int] = field(default_factory=dict)


class Node:
    """`perception run`: a thin adapter from sockets to `Pipeline.step`."""

    def __init__(self, config: NodeConfig, pipeline: Pipeline, default_rig: Rig | None = None):
        self.config = config
        self.pipeline = pipeline
        self.counters = NodeCounters()
        self.sync = Bundler.from_config(
            config.inputs.camera_topics, config.sync, default_rig=default_rig
        )
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self._bad = RateLimitedLogger(log)
        self._limits = wire.WireLimits(max_points=config.max_points)
        # Sensor clocks against the host clock, per stream (offset, drift, jumps).
        self.clocks = ClockMonitor()
        self.clock_jumps = 0
        self._last_publish_ns = 0
        self._last_latency_ns = 0
        # Sweep stamp -> (host wall, host monotonic) receive times, for the latency.
        self._sweep_receipts: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.realtime: RealtimeStatus | None = None
        self._receiver_error: BaseException | None = None
        # Bundles ready for the worker, with the monotonic time each became ready.
        self._ready: list[tuple[SyncedBundle, int]] = []

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set. Setup failures (sockets, model) raise; per-message
        problems never do."""
        self.pipeline.warm_up()
        self.realtime = apply_realtime(self.config.realtime)
        for refusal in self.realtime.refused:
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
            )
        except BaseException as e:
            self._receiver_error = e
            ready.set()
            return
        ready.set()
        with subscriber:
            while not stop.is_set():
                frames = subscriber.recv(timeout_ms=_RECEIVE_POLL_MS)
                if frames is not None:
                    self._file_message(frames)
                # Also without a message: a bundle may be due at its timeout.
                with self._cond:
                    self._collect_ready()

    def _collect_ready(self) -> None:
        """Moves the synchroniser's complete (or timed-out) bundles to the worker's ready list,
        stamped with the monotonic time they became ready. Called with `_cond` held."""
        bundles = self.sync.poll(time.time_ns())
        if bundles:
            ready_ns = time.monotonic_ns()
            self._ready += [(bundle, ready_ns) for bundle in bundles]
            self._cond.notify()

    def _file_message(self, frames: Sequence[zmq.Frame]) -> None:
        receive_ns = time.time_ns()
        receive_mono_ns = time.monotonic_ns()
        start = time.perf_counter_ns()
        self.counters.received += 1
        try:
            topic, msg = wire.decode(frames, self._limits)
        except WireError as e:
            self.counters.decode_errors += 1
            self._bad.warning(f"decode:{e.stream}", f"dropped message: {e}")
            return
        decode_ns = time.perf_counter_ns() - start
        clock_stamp_ns = msg.header.stamp_ns
        if isinstance(msg, LidarSweep):
            # A sweep leaves the sensor once complete: its last point bounds the transport delay.
            clock_stamp_ns = sweep_end_ns(msg)
        with self._cond:
            if isinstance(msg, LidarSweep) and topic == self.config.inputs.lidar_topic:
                self._sweep_receipts[msg.header.stamp_ns] = (receive_ns, receive_mono_ns)
                while len(self._sweep_receipts) > 4 * self.config.inputs.high_water_mark + 16:
                    self._sweep_receipts.popitem(last=False)
            if self.clocks.observe(topic, clock_stamp_ns, receive_ns):
                self.clock_jumps += 1
                self._bad.warning(f"clock:{topic}", f"{topic}: sensor clock jump detected")
            result = self.sync.add(msg, receive_ns, decode_ns)
            if result.filed is Filed.BAD_RIG:
                self.counters.bad_rigs += 1
                self._bad.warning(f"rig:{topic}", f"dropped rig message: {result.reason}")
            elif result.filed is Filed.NOT_AN_INPUT:
                self.counters.decode_errors += 1
                self._bad.warning(f"type:{topic}", f"dropped message on {topic}: {result.reason}")

    # -- worker thread ---------------------------------------------------------------------
    def _work_loop(self, stop: threading.Event, publisher: Publisher) -> None:
        seq = 0
        last_stamp_ns = -(2**63)
        next_diagnostics_ns = time.monotonic_ns()
        while not stop.is_set():
            with self._cond:
                if not self._ready:
                    self._cond.wait(timeout=0.02)
                ready, self._ready = self._ready, []
            bundles = [bundle for bundle, _ in ready]
            if time.monotonic_ns() >= next_diagnostics_ns:
                self._publish_diagnostics(publisher)
                next_diagnostics_ns += 1_000_000_000
            if not bundles:
                continue
            self.counters.bundles += len(bundles)
            # The newest sweep only, and never one older than a sweep already published: a
            # bundle completed late (at its timeout, degraded) after a newer one must not make
            # the output go back in time.
            bundle, ready_ns = max(ready, key=lambda r: r[0].lidar.header.stamp_ns)
            if bundle.lidar.header.stamp_ns <= last_stamp_ns:
                self.counters.skipped_bundles += len(bundles)
                continue
            self.counters.skipped_bundles += len(bundles) - 1
            last_stamp_ns = bundle.lidar.header.stamp_ns
            queue_wait_ns = time.monotonic_ns() - ready_ns
            with gc_held(self.config.realtime.gc_hold):
                try:
                    detections = self.pipeline.step(bundle, seq)
                except Exception as e:  # one bad bundle must not stop the node
                    self.counters.step_errors += 1
                    self._bad.warning("step", f"dropped sweep {bundle.lidar.header.seq}: {e!r}")
                    continue
                seq += 1
                timings = {**detections.timings_ns, "queue_wait": queue_wait_ns}
                self._publish(publisher, replace(detections, timings_ns=timings))

    def _latency_ns(self, stamp_ns: int) -> int:
        """Sensor-to-now latency of the sweep stamped `stamp_ns` (see the module docstring)."""
        with self._cond:
            host_stamp_ns = None
            if self.config.budgets.apply_clock_offset:
                host_stamp_ns = self.clocks.to_host_ns(
                    self.config.inputs.lidar_topic, stamp_ns, min_samples=CLOCK_MIN_SWEEPS
                )
            receipt = self._sweep_receipts.get(stamp_ns)
        if host_stamp_ns is None:
            host_stamp_ns = stamp_ns
        if receipt is None:
            return time.time_ns() - host_stamp_ns
        receive_ns, receive_mono_ns = receipt
        return (receive_ns - host_stamp_ns) + (time.monotonic_ns() - receive_mono_ns)

    def _check_budgets(self, timings: dict[str, int], latency_ns: int) -> bool:
        """Counts this frame's overruns; True when every budget held."""
        budgets = self.config.budgets
        over = [
            stage
            for stage, limit_ms in budgets.stages_ms.items()
            if timings.get(stage, 0) > limit_ms * 1e6
        ]
        if latency_ns > budgets.end_to_end_ms * 1e6:
            over.append("end_to_end")
        counters = self.counters
        for stage in over:
            counters.overruns_by_stage[stage] = counters.overruns_by_stage.get(stage, 0) + 1
        if over:
            counters.budget_overruns += 1
            counters.consecutive_overruns += 1
            counters.longest_overrun_run = max(
                counters.longest_overrun_run, counters.consecutive_overruns
            )
        else:
            counters.consecutive_overruns = 0
        return not over

    def _publish(self, publisher: Publisher, detections: DetectionList) -> None:
        timings = dict(detections.timings_ns)
        timings["publish"] = self._last_publish_ns
        latency_ns = self._latency_ns(detections.header.stamp_ns)
        budget_ok = self._check_budgets(timings, latency_ns)
        self._last_latency_ns = latency_ns
        final = replace(detections, timings_ns=timings, latency_ns=latency_ns, budget_ok=budget_ok)
        start = time.perf_counter_ns()
        publisher.send(final, topic=self.config.outputs.detections_topic)
        self._last_publish_ns = time.perf_counter_ns() - start
        self.counters.published += 1

    def diagnostics(self) -> dict[str, object]:
        """A snapshot of counters and synchroniser statistics."""
        with self._cond:
            clocks = {name: asdict(state) for name, state in self.clocks.diagnostics().items()}
            sync = asdict(self.sync.stats)
        return {
            "stamp_ns": time.time_ns(),
            "counters": asdict(self.counters),
            "sync": sync,
            "clocks": clocks,
            "clock_jumps": self.clock_jumps,
            "last_publish_ns": self._last_publish_ns,
            "last_latency_ns": self._last_latency_ns,
            "budgets_ms": {
                "end_to_end": self.config.budgets.end_to_end_ms,
                **self.config.budgets.stages_ms,
            },
            "realtime": None if self.realtime is None else asdict(self.realtime),
        }

    def _publish_diagnostics(self, publisher: Publisher) -> None:
        topic = self.config.outputs.diagnostics_topic
        publisher.send_frames([topic.encode(), json.dumps(self.diagnostics()).encode()])
