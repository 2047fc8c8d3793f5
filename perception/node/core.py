"""The socket-free node core: messages in (with their receive times), DetectionLists and
diagnostics out.

The live node (perception.node.node) wraps it with a receiver thread, a worker thread and
ZeroMQ sockets; offline replay (replay.offline), the Ray path and the benchmarks drive the same
object with recorded receive times. Everything that decides what comes out - decoding and its
error counting, synchronisation, the clock-offset estimate, the stale-output rule, the pipeline,
latency and budgets - lives here, so live and replay give the same outputs and the same counters
for the same input and arrival times, by construction. Only what depends on the machine's speed
differs: a live node that falls behind merges ready bundles (and skips all but the newest), and
measured durations differ from run to run.

Receive side (one thread): `on_frames` (wire frames, decoded here) or `on_message` (a decoded
message) file one message and return the bundles ready when it arrived (those due before it,
then those it completed: one batch, as the live receiver hands them over); `poll(now_ns)`
returns bundles whose timeout passed without a message (the live receiver polls every
`RECEIVE_POLL_NS`; offline replay reproduces those polls with `idle_polls`); `flush` ends the
input.

Processing side (another thread may call it): `on_bundles(ready)` processes the newest ready
bundle - never one older than an output already produced (published stamps only move forward) -
counts the others as skipped, and returns its DetectionList with timings, `latency_ns` and
`budget_ok`, or None. `take_tracks()`, once that DetectionList is published, updates the
tracker with it and returns the TrackList (tracking is off the detections' path).
`record_publish(ns)` reports how long the previous DetectionList took to publish (a message
cannot carry its own publish time, so the next one carries it).

Latency: from the sweep stamp, moved onto the host clock with the lidar clock's estimated offset
(perception.sync.clock; `budgets.apply_clock_offset`), to the end of processing: the sweep's
receive time minus that stamp, plus its sync wait, the decode and filing of the message that
completed the bundle, its queue wait and the measured processing time. Live, receive times are host
wall time and the rest is measured on the monotonic clock, so a wall-clock step during a frame does
not corrupt it; offline, receive times are the recorded ones. The lidar clock's offset is estimated
from each sweep's *last* point (a sweep leaves the sensor once complete), so the estimate absorbs
only the minimum transport delay, not the sweep duration; until `CLOCK_MIN_SWEEPS` sweeps have
arrived the clocks are taken to agree.

Sensor clocks apart (the rig's `time_offsets_ns`, calibration.rig): each sensor message's stamp
is moved onto the common clock as it arrives, by its stream's offset in the rig in force,
before it is judged and filed; the output is stamped with the sweep's moved stamp.

Time faults (perception.sync.clock, `clocks:` in the config): every sensor message's stamp is
judged against the host receive clock before it is filed. One implausibly far ahead or behind is
dropped and counted (`stamp_faults`, and per stream in the clocks of the diagnostics); a clock
jump, once confirmed by the stream's next messages, is counted (`clock_jumps`), logged, and makes
the synchroniser forget that stream's old timeline; for the lidar it also resets the "last
published" mark (a new epoch: bundles of the old timeline are skipped), so a sensor clock that
steps back, or a publisher restarted with other stamps, never blacks out the output. A sweep
whose points' offsets claim a span beyond both the time since the previous sweep began and the
lidar's usual span is a stamp fault before its clock is judged (perception.sync.span_gate): such
sweeps in a row read as a clock jump forward and back.

Liveness (perception.sync.liveness, `inputs.rates_hz`): every accepted message tells it its
stream is alive; a camera silent for `inputs.dead_after_periods` periods is not waited for
(bundles go out at once, degraded). It is a function of the receive times only, so replay
reproduces it; `idle_polls` polls at the moments a liveness change releases a bundle. The
diagnostics report each sensor alive or dead with its rate, and `status` `stale` when every
input is.

Per-message problems (refused while receiving, undecodable or above `config.limits`, not a
sensor input, a rig calibration rejects, a bundle the pipeline cannot process, an output that
cannot be published) are counted and logged at a bounded rate; nothing raises. A rig message is
parsed before the core's lock is taken, so a big one does not hold up the processing side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from calibration import Rig
from perception.config import NodeConfig
from perception.errors import StalePayloadError, WireError
from perception.io.shm import payload_intact
from perception.msgs import wire
from perception.msgs.schema import INT64_MAX, INT64_MIN
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RealtimeStatus,
    RigMessage,
    SensorClock,
    SensorStatus,
    SyncedBundle,
    TrackList,
    sweep_end_ns,
)
from perception.node.ahead import CameraAhead
from perception.node.calibration import CalibrationWatch
from perception.pipeline import Pipeline
from perception.pipeline.pipeline import StepFrame
from perception.pipeline.tracking import Tracker
from perception.ratelimit import RateLimitedLogger
from perception.sync import Bundler, Filed
from perception.sync.bundler import parse_rig
from perception.sync.clock import ClockMonitor, Verdict
from perception.sync.ego import world_from_vehicle
from perception.sync.liveness import Liveness
from perception.sync.phase import CameraPhases
from perception.sync.span_gate import SpanGate

__all__ = ["CLOCK_MIN_SWEEPS", "RECEIVE_POLL_NS", "NodeCore", "NodeCounters", "ReadyBundle"]

log = logging.getLogger("perception.node")

#: How often the live receiver polls for due bundles when no message arrives (ns); offline replay
#: reproduces the same polls (`NodeCore.idle_polls`).
RECEIVE_POLL_NS = 10_000_000
# What the synchroniser refuses as a bad message (it counts them), logged at a bounded rate.
_REFUSED = frozenset({Filed.BAD_RIG, Filed.BAD_FIX, Filed.NOT_AN_INPUT})
#: A camera whose clock is this far from the lidar's (their offsets to the host clock apart,
#: the sweep's span and the transports' delays included) has frames that pair with no sweep:
#: frames are matched by their stamps, far within a second of a sweep's.
CLOCKS_APART_NS = 1_000_000_000
# Sweeps seen before the lidar clock's offset estimate is applied: with fewer, the estimate is a
# median of single samples rather than a lower envelope, and may exceed a sweep's transport delay.
CLOCK_MIN_SWEEPS = 16


@dataclass
class NodeCounters:
    """What the node received, dropped, processed and produced; reported on diagnostics.

    `received` counts every message (decodable or not); `decode_errors` the undecodable ones and
    those above the limits (`config.limits`), `receive_refused` among them those the transport
    refused while receiving (too many frames or bytes); `input_disconnects` the connections
    ZeroMQ dropped (a frame above `limits.max_message_bytes`, or a publisher gone) and the
    receiver restored. `stale_payloads`: messages whose payload lay in shared memory that its
    writer recycled before the node had read and validated it (perception.io.shm: the receiver
    fell behind the writer's ring), dropped, not counted as decode errors. What the synchroniser
    refused (bad rigs, implausible fixes, messages that are not sensor inputs, duplicates, late
    frames) it counts itself: perception.sync.SyncStats.
    `bundles` counts ready bundles, `skipped_bundles` those not processed (the node was behind,
    or an output with a newer stamp was already produced), `step_errors` bundles the pipeline
    failed on, `published` the DetectionLists produced, `publish_errors` outputs that could not
    be encoded or sent (dropped). Overruns: frames over any budget, the current and longest run
    of consecutive ones, and per stage in `overruns_by_stage` (there also `tracking`, the
    TrackList's stage, which is off the detections' path and counts no frame over budget).
    `sync_errors` counts the decoded
    messages the synchroniser (or the clock monitor) raised on: a bug there that costs the
    message, not the node. Live only: the
    node adds `loop_errors` (exceptions its threads caught and survived), `receiver_restarts`
    (receivers its watchdog replaced), and from its sockets (perception.io.curve)
    `rejected_publishers`, CURVE handshakes refused with the sensors' publishers (a wrong or
    missing server key), and `rejected_subscribers`, with clients of the outputs endpoint (a key
    not allowed). `stamp_faults`:
    sensor messages dropped for a stamp too far from the host receive clock (or, for a sweep,
    a span its stamp leaves no room for); `clock_jumps`:
    confirmed sensor clock jumps (each reset that stream's synchronisation). `unfit_images`:
    camera images the pipeline left out as too dark or too blurred
    (perception.pipeline.camera_health), or as from a camera the rig does not have (their
    streams are listed as degraded).
    `tracker_resets`: times the tracker started over (a lidar clock jump, a gap in the sweeps,
    the ego pose gained or lost); `tracking_errors`: sweeps the tracker failed on (their
    DetectionLists still go out, without a TrackList). `calibration_sweeps`: sweeps the
    calibration monitor used (perception.node.calibration), `calibration_ns` the time it spent
    on them in all (wall time, after the outputs were published), `calibration_cpu_ns` the CPU
    time of that (its thread's: what it cost the cores, without the time it waited for them),
    `calibration_errors` sweeps it failed on,
    `calibration_skipped` sweeps due to it that the live node's monitor thread was too busy to
    take (a search over its window can take longer than a sweep), `calibration_over_budget`
    those it passed over because the monitor had spent its CPU budget
    (`calibration_monitor.budget_ms_per_sweep`).
    """

    received: int = 0
    decode_errors: int = 0
    receive_refused: int = 0
    input_disconnects: int = 0
    stale_payloads: int = 0
    sync_errors: int = 0
    clock_jumps: int = 0
    loop_errors: int = 0
    receiver_restarts: int = 0
    bundles: int = 0
    skipped_bundles: int = 0
    step_errors: int = 0
    published: int = 0
    publish_errors: int = 0
    budget_overruns: int = 0
    consecutive_overruns: int = 0
    longest_overrun_run: int = 0
    rejected_publishers: int = 0
    rejected_subscribers: int = 0
    stamp_faults: int = 0
    unfit_images: int = 0
    tracker_resets: int = 0
    tracking_errors: int = 0
    calibration_sweeps: int = 0
    calibration_ns: int = 0
    calibration_cpu_ns: int = 0
    calibration_errors: int = 0
    calibration_skipped: int = 0
    calibration_over_budget: int = 0
    overruns_by_stage: dict[str, int] = field(default_factory=dict)

    def scalars(self) -> dict[str, int]:
        """The integer counters by name (everything but the per-stage map)."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}


@dataclass(frozen=True)
class ReadyBundle:
    """A bundle ready for processing, and when it became ready (`ready_ns`, on the receive
    clock: host wall time live, recorded time offline): the receipt of the message that
    completed it, or the poll that found it due. `epoch`: the lidar clock's timeline it belongs
    to (a confirmed lidar clock jump starts a new one). `filing_ns`: from that receipt until the
    bundle was handed on, the message's decode and filing (measured; 0 from a poll), on the
    frame's path and in its latency."""

    bundle: SyncedBundle
    ready_ns: int
    epoch: int = 0
    filing_ns: int = 0


class NodeCore:
    """The node without sockets or threads (see the module docstring).

    Thread safety: the receive side (`on_frames`, `on_message`, `poll`, `flush`) and the
    processing side (`on_bundles`, `record_publish`) may run on two threads; `diagnostics` on
    either. The pipeline runs outside the core's lock.
    """

    def __init__(
        self,
        config: NodeConfig,
        pipeline: Pipeline,
        default_rig: Rig | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.counters = NodeCounters()
        inputs = config.inputs
        #: Which sensors are alive (from the receive times of their messages).
        self.liveness = Liveness.for_streams(
            (inputs.lidar_topic, *inputs.camera_topics, inputs.gnss_topic),
            inputs.rates_hz,
            inputs.default_rate_hz,
            inputs.dead_after_periods,
        )
        self.bundler = Bundler.from_config(
            inputs.camera_topics, config.sync, default_rig=default_rig, liveness=self.liveness
        )
        clocks = config.clocks
        # Sweeps whose offsets claim a span their stamps leave no room for.
        self._spans = SpanGate()
        #: Sensor clocks against the host clock, per stream (offset, drift, jumps, rejections).
        self.clocks = ClockMonitor(
            jump_threshold_ns=round(clocks.jump_threshold_ms * 1e6),
            confirm=clocks.jump_confirm,
            confirm_ns=round(clocks.jump_confirm_ms * 1e6),
            max_delay_ns=round(clocks.max_delay_ms * 1e6),
            max_offset_ns=round(clocks.max_offset_ms * 1e6),
            warmup=clocks.warmup_messages,
            max_drift_ppm=clocks.max_drift_ppm,
        )
        #: The real-time settings in force, as the process wrapping the core applied them.
        self.realtime: RealtimeStatus | None = None
        self._lock = threading.Lock()
        self._bad = RateLimitedLogger(log)
        # Where each camera's frames fall in their sweeps, against its configured offset.
        self._phases = CameraPhases()
        #: The bounds every received message is checked against (the transport's too).
        self.limits = config.limits
        self._seq = 0
        self._diagnostics_seq = 0
        self._last_stamp_ns: int | None = None
        # The lidar clock's timeline: a confirmed lidar clock jump starts a new one.
        self._epoch = 0
        # Sensors dead at the last diagnostics, and whether every input was: logged on change.
        self._dead: set[str] = set()
        self._stale = False
        # The receive clock at the first diagnostics: a sensor never heard from, while no
        # stream at all has been, is logged silent once its periods have passed since then.
        self._first_diagnostics_ns: int | None = None
        self._last_publish_ns = 0
        self._last_latency_ns = 0
        # Conditions of the live node's input sockets (a host that does not resolve).
        self._input_notes: tuple[str, ...] = ()
        #: The multi-object tracker after fusion (processing side only).
        self.tracker = Tracker(config.tracking)
        self._tracker_epoch = 0
        self._to_track: tuple[ReadyBundle, DetectionList] | None = None
        #: The bundle of the last DetectionList `on_bundles` returned (processing side): what the
        #: live view shows beside it.
        self.last_bundle: SyncedBundle | None = None
        #: The calibration monitor, fed after the outputs are published (processing side).
        monitor = config.calibration_monitor
        self.calibration = CalibrationWatch(monitor) if monitor.enabled else None
        self._calibration_pending: StepFrame | None = None
        #: Camera frames encoded as they arrive (`pipeline.camera_ahead`; set by the live node,
        #: which owns its thread): `on_message` offers each filed frame, `on_bundles` claims
        #: the bundle's. None: encoded in line (offline replay).
        self.camera_ahead: CameraAhead | None = None

    @property
    def epoch(self) -> int:
        """The lidar timeline's number: a confirmed lidar clock jump starts a new one, within
        which output stamps only move forward."""
        return self._epoch

    # -- receive side ----------------------------------------------------------------------

    def on_frames(
        self, frames: Sequence[Any], receive_ns: int, *, caught_up: bool = True
    ) -> list[ReadyBundle]:
        """Decode one received multipart message and file it; the bundles it made ready.
        Undecodable messages are counted and dropped. `caught_up`: see `on_message`."""
        start = time.perf_counter_ns()
        try:
            topic, msg = wire.decode(frames, self.limits)
        except WireError as e:
            self._bad.warning(f"decode:{e.stream}", f"dropped message: {e}")
            with self._lock:
                self.counters.received += 1
                self.counters.decode_errors += 1
                if caught_up:
                    self.liveness.caught_up(receive_ns)
                ready = self._poll_locked(receive_ns)
            return _filed(ready, time.perf_counter_ns() - start)
        decode_ns = time.perf_counter_ns() - start
        if not payload_intact(frames):
            # The seqlock's second check: the arrays were validated in a slot recycled meanwhile.
            self._bad.warning(
                f"stale:{topic}",
                f"{topic}: dropped message: its shared-memory payload was recycled by the writer "
                "while it was decoded",
            )
            with self._lock:
                self.counters.received += 1
                self.counters.stale_payloads += 1
                if caught_up:
                    self.liveness.caught_up(receive_ns)
                ready = self._poll_locked(receive_ns)
            return _filed(ready, time.perf_counter_ns() - start)
        return self.on_message(topic, msg, receive_ns, decode_ns, caught_up=caught_up)

    def on_refused(self, error: WireError) -> None:
        """A message the transport refused while receiving (too many frames or bytes, a bad
        shared-memory descriptor): counted as received and undecodable; one whose shared-memory
        payload was recycled before it was read (`StalePayloadError`) as a stale payload."""
        with self._lock:
            self.counters.received += 1
            if isinstance(error, StalePayloadError):
                self.counters.stale_payloads += 1
            else:
                self.counters.decode_errors += 1
                self.counters.receive_refused += 1
        self._bad.warning(f"refused:{error.stream}", f"dropped message: {error}")

    def on_disconnect(self, endpoint: str) -> None:
        """ZeroMQ dropped the connection to `endpoint` (the receiver restores it)."""
        with self._lock:
            self.counters.input_disconnects += 1
        self._bad.warning(
            f"disconnect:{endpoint}",
            f"{endpoint}: connection dropped (a frame above {self.limits.max_message_bytes} bytes"
            ", or the publisher went away); reconnecting",
        )

    def on_publish_error(self, what: str, error: Exception) -> None:
        """An output (`what`: detections, diagnostics) that could not be encoded or sent."""
        with self._lock:
            self.counters.publish_errors += 1
        self._bad.warning(f"publish:{what}", f"dropped {what}: {error}")

    def on_message(
        self,
        topic: str,
        msg: Message,
        receive_ns: int,
        decode_ns: int = 0,
        *,
        caught_up: bool = True,
    ) -> list[ReadyBundle]:
        """File one decoded message received at `receive_ns` on `topic` (`decode_ns` after
        it was received); the bundles ready now (those due before it arrived first), each
        with that decode and its filing (`ReadyBundle.filing_ns`). `caught_up`: no other
        message was waiting when it was received; False while the live receiver drains a
        backlog, during which a sensor's silence is not taken for death (its messages may be in
        the backlog)."""
        start_ns = time.perf_counter_ns()
        # Parsed before the lock: a big rig takes long, and the processing side needs the lock.
        rig = parse_rig(msg) if isinstance(msg, RigMessage) else None
        with self._lock:
            self.counters.received += 1
            if caught_up:
                self.liveness.caught_up(receive_ns)
            ready = self._poll_locked(receive_ns - 1)
            # A camera frame filed, and the rig to encode it with: offered after the lock.
            offer: tuple[CameraFrame, Rig] | None = None
            try:
                moved = self._on_common_clock(msg)
                if moved is not None and self._judge_stamp(topic, moved, receive_ns):
                    evicted = self.bundler.stats.dropped_sweeps_queue_full
                    result = self.bundler.add(moved, receive_ns, decode_ns, parsed_rig=rig)
                    if self.bundler.stats.dropped_sweeps_queue_full > evicted:
                        # Counted on diagnostics alone, a queue too small for the sweeps
                        # waiting for their cameras lost 99 of 100 sweeps without a word.
                        self._bad.warning("sync:queue_full", self._queue_full_text())
                    self._phase(topic, moved, result.filed)
                    if result.filed in _REFUSED:
                        self._bad.warning(
                            f"{result.filed.value}:{topic}", f"dropped: {result.reason}"
                        )
                    elif (
                        self.camera_ahead is not None
                        and result.filed is Filed.ACCEPTED
                        and isinstance(moved, CameraFrame)
                        and (ahead_rig := self.bundler.rig_at(moved.header.stamp_ns)) is not None
                    ):
                        offer = (moved, ahead_rig)
            except Exception as e:  # a bug below must cost one message, not the node
                self.counters.sync_errors += 1
                self._bad.warning("sync", f"dropped a message on {topic[:100]!r}: {_what(e)}")
            ready += self._poll_locked(receive_ns)
        # Not a frame that completed a bundle just now: the worker encodes that one at once.
        if (
            offer is not None
            and self.camera_ahead is not None
            and not any(f is offer[0] for r in ready for f in r.bundle.cameras.values())
        ):
            self.camera_ahead.offer(*offer)
        return _filed(ready, decode_ns + time.perf_counter_ns() - start_ns)

    def _phase(self, topic: str, msg: Message, filed: Filed) -> None:
        """A sweep or camera frame the synchroniser took, for the cameras' phases (a frame
        too late for its bundle still says where the camera's frames fall)."""
        if isinstance(msg, LidarSweep) and filed is Filed.ACCEPTED:
            self._phases.on_sweep(msg.header.stamp_ns)
        elif isinstance(msg, CameraFrame) and filed in (Filed.ACCEPTED, Filed.LATE):
            self._phases.on_frame(topic, msg.header.stamp_ns)

    def camera_phase_notes(self) -> list[str]:
        """A note for each camera whose frames come steadily away from the time its
        `sync.camera_offsets_ms` expects them (perception.sync.phase), logged at a bounded
        rate; the diagnostics carry them, and a replay says them at its end."""
        with self._lock:
            return self._phase_notes()

    def _phase_notes(self) -> list[str]:
        notes = self._phases.notes(
            self.config.sync.camera_offsets_ms, self.config.inputs.camera_topics
        )
        for camera, note in notes.items():
            self._bad.warning(f"phase:{camera}", note)
        return list(notes.values())

    def _queue_full_text(self) -> str:
        sync = self.config.sync
        return (
            f"{self.config.inputs.lidar_topic}: the oldest sweep waiting for its cameras was "
            f"dropped: the sync queue is full (sync.queue_size {sync.queue_size}, queue_bytes "
            f"{sync.queue_bytes}); {self.bundler.stats.dropped_sweeps_queue_full} dropped so far"
        )

    def _on_common_clock(self, msg: Message) -> Message | None:
        """A sensor message with its stamp moved onto the rig's common clock: plus the rig's
        time offset of its stream (`header.stream`, else its frame, `header.frame_id`; the rig
        in force at its stamp, or the first rig for a stamp before it). None, counted as a
        stamp fault, where the moved stamp leaves int64 (a wire stamp is not negative).
        Everything after this (synchronisation, the sweep's deskew, the cameras' motion, the
        output's stamp) sees the moved stamp."""
        if not isinstance(msg, LidarSweep | CameraFrame | GnssFix):
            return msg
        header = msg.header
        rig = self.bundler.rig_at(header.stamp_ns, or_first=True)
        if rig is None or not rig.time_offsets_ns:
            return msg
        offsets = rig.time_offsets_ns
        offset_ns = offsets.get(header.stream, offsets.get(header.frame_id, 0))
        if not offset_ns:
            return msg
        stamp_ns = header.stamp_ns + offset_ns
        if not 0 <= stamp_ns <= INT64_MAX:
            self.counters.stamp_faults += 1
            self._bad.warning(
                f"offset:{header.stream}",
                f"{header.stream}: dropped message {header.seq}: its stamp {header.stamp_ns} ns "
                f"with the rig's time offset {offset_ns:+d} ns is no time",
            )
            return None
        return replace(msg, header=replace(header, stamp_ns=stamp_ns))

    def _judge_stamp(self, topic: str, msg: Message, receive_ns: int) -> bool:
        """Whether a message may be filed: a sensor message's stamp is judged against the host
        receive clock (rigs are not: their stamp says from when they hold, not when they were
        sent). A confirmed clock jump resets what the stream's old timeline left behind."""
        if not isinstance(msg, LidarSweep | CameraFrame | GnssFix):
            return True
        if isinstance(msg, LidarSweep) and (span := self._spans.problem(topic, msg)) is not None:
            # Before its clock is judged: such sweeps in a row read as a clock jump.
            self.counters.stamp_faults += 1
            self._bad.warning(f"span:{topic}", f"{topic}: dropped sweep {msg.header.seq}: {span}")
            return False
        # A sweep leaves the sensor once complete: its last point bounds the transport delay.
        stamp_ns = sweep_end_ns(msg) if isinstance(msg, LidarSweep) else msg.header.stamp_ns
        if stamp_ns > INT64_MAX:
            # Offsets that run the sweep's end past int64 are no time: such a stamp would
            # leave the clock state (and every Diagnostics after it) out of the wire's range.
            self.counters.stamp_faults += 1
            return False
        expected = self.clocks.expected_offset_ns(topic, stamp_ns)
        verdict = self.clocks.observe(topic, stamp_ns, receive_ns)
        if isinstance(msg, LidarSweep) and verdict is not Verdict.REJECTED:
            self._spans.accepted(topic, msg)
        if verdict is Verdict.ACCEPTED:
            return True
        if verdict is Verdict.REJECTED:
            self.counters.stamp_faults += 1
            ahead_ns = stamp_ns + (expected or 0) - receive_ns
            where = "ahead of" if ahead_ns > 0 else "behind"
            self._bad.warning(
                f"stamp:{topic}",
                f"{topic}: dropped message {msg.header.seq}: stamp {stamp_ns} ns is "
                f"{abs(ahead_ns) / 1e9:.3f} s {where} the host receive clock",
            )
            return False
        new_offset_ns = self.clocks.expected_offset_ns(topic, stamp_ns) or 0
        if verdict is Verdict.ADOPTED:
            self._bad.warning(
                f"clock:{topic}",
                f"{topic}: sensor clock is {new_offset_ns / 1e9:.3f} s behind the host clock "
                "(confirmed by its messages); adopted",
            )
            return True
        self.counters.clock_jumps += 1
        dropped = self.bundler.clock_jump(msg)
        if isinstance(msg, LidarSweep):
            # Stamps only move forward within an epoch: a new one, so output resumes.
            self._epoch += 1
            self._last_stamp_ns = None
        # Each jump is logged: confirming one takes several messages, which bounds their rate.
        log.warning(
            "%s: sensor clock jumped by %+.3f s; its synchronisation was reset (%d buffered "
            "messages dropped)",
            topic,
            ((expected or 0) - new_offset_ns) / 1e9,
            dropped,
        )
        return True

    def poll(self, now_ns: int, *, caught_up: bool = True) -> list[ReadyBundle]:
        """Bundles due at `now_ns` (their timeout passed, or the cameras they wait for died)
        that no message completed. `caught_up`: see `on_message`."""
        with self._lock:
            if caught_up:
                self.liveness.caught_up(now_ns)
            return self._poll_locked(now_ns)

    def _poll_locked(self, now_ns: int) -> list[ReadyBundle]:
        bundles = self.bundler.poll(now_ns)
        self.counters.bundles += len(bundles)
        return [ReadyBundle(b, now_ns, self._epoch) for b in bundles]

    def idle_polls(self, last_ns: int, until_ns: int | None) -> list[list[ReadyBundle]]:
        """The batches a live receiver would emit by polling every `RECEIVE_POLL_NS` after a
        message at `last_ns` while no other message arrives before `until_ns` (None: never):
        what offline replay needs to reproduce the live node's timeouts."""
        out: list[list[ReadyBundle]] = []
        with self._lock:
            while (deadline := self.bundler.next_deadline_ns()) is not None:
                # The first poll at or after the deadline, on the receiver's poll grid.
                steps = max(1, -(-(deadline - last_ns) // RECEIVE_POLL_NS))
                poll_ns = last_ns + steps * RECEIVE_POLL_NS
                if until_ns is not None and poll_ns >= until_ns:
                    break
                self.liveness.caught_up(poll_ns)
                batch = self._poll_locked(poll_ns)
                if batch:
                    out.append(batch)
                last_ns = poll_ns
        return out

    def flush(self, last_ns: int) -> list[list[ReadyBundle]]:
        """End of input after a message at `last_ns`: the batches the live node would still
        emit at its timeouts, then whatever a policy without timeouts holds (offline replay)."""
        out = self.idle_polls(last_ns, None)
        with self._lock:
            # The input has ended: nothing is waiting any more.
            self.liveness.caught_up(2**63 - 1)
            rest = self.bundler.flush()
            self.counters.bundles += len(rest)
            epoch = self._epoch
        if rest:
            ready_ns = out[-1][-1].ready_ns if out else last_ns
            out.append([ReadyBundle(b, ready_ns, epoch) for b in rest])
        return out

    # -- processing side -------------------------------------------------------------------

    def on_bundles(
        self, ready: Sequence[ReadyBundle], *, queue_wait_ns: int = 0
    ) -> DetectionList | None:
        """Process the newest of `ready` (the others are counted as skipped) unless an output
        with the same or a newer sweep stamp was already produced; its DetectionList, or None.
        `queue_wait_ns`: how long the bundles waited for the processing thread."""
        if not ready:
            return None
        start_ns = time.perf_counter_ns()
        with self._lock:
            # Bundles of the lidar clock's old timeline (before a confirmed jump) are skipped.
            current = [r for r in ready if r.epoch == self._epoch]
            if not current:
                self.counters.skipped_bundles += len(ready)
                return None
            chosen = max(current, key=lambda r: r.bundle.lidar.header.stamp_ns)
            stamp_ns = chosen.bundle.lidar.header.stamp_ns
            # A bundle completed late (at its timeout, degraded) after a newer one was produced
            # must not make the output go back in time.
            if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
                self.counters.skipped_bundles += len(ready)
                return None
            self.counters.skipped_bundles += len(ready) - 1
            self._last_stamp_ns = stamp_ns
            seq = self._seq
        try:
            ahead = (
                None
                if self.camera_ahead is None
                else self.camera_ahead.claim(chosen.bundle.cameras)
            )
            detections = self.pipeline.step(chosen.bundle, seq, ahead)
        except Exception as e:  # one bad bundle must not stop the node
            with self._lock:
                self.counters.step_errors += 1
            sweep = chosen.bundle.lidar.header
            self._bad.warning(
                "step", f"dropped sweep {sweep.stream} {sweep.seq}: {type(e).__name__}: {e}"
            )
            return None
        if self.calibration is not None and self.calibration.offer():
            self._calibration_pending = self.pipeline.last_frame
        with self._lock:
            self._seq += 1
            host_stamp_ns = self._host_stamp_ns(chosen.bundle)
            timings = {
                "transport": self._transport_ns(chosen, host_stamp_ns),
                **detections.timings_ns,
                "queue_wait": queue_wait_ns,
                "publish": self._last_publish_ns,
            }
            # On the frame's path: the completing message's decode (and filing), not every
            # member's (a camera frame decoded before the sweep came was off it).
            timings["decode"] = chosen.filing_ns
            processing_ns = time.perf_counter_ns() - start_ns
            waited_ns = chosen.filing_ns + queue_wait_ns + processing_ns
            latency_ns = self._latency_ns(chosen, host_stamp_ns, waited_ns)
            budget_ok = self._check_budgets(timings, latency_ns)
            self._last_latency_ns = latency_ns
            self.counters.published += 1
            missing = chosen.bundle.missing
            self.counters.unfit_images += sum(s not in missing for s in detections.degraded)
            self.last_bundle = chosen.bundle
        detections = replace(
            detections, timings_ns=timings, latency_ns=latency_ns, budget_ok=budget_ok
        )
        self._to_track = (chosen, detections)
        return detections

    def take_tracks(self) -> TrackList | None:
        """The tracker updated with the last DetectionList `on_bundles` returned, once: its
        TrackList, with the DetectionList's timings and `tracking` (None when the tracker
        failed on it, or when that DetectionList was tracked already). Processing side, once the
        DetectionList is published: tracking is not on the detections' path (a planner that
        takes detections gets them a tracker update sooner, as with Autoware's separate
        detection and tracking nodes); the tracks follow them."""
        pending, self._to_track = self._to_track, None
        if pending is None:
            return None
        chosen, detections = pending
        start_ns = time.perf_counter_ns()
        tracks = self._track(chosen, detections)
        tracking_ns = time.perf_counter_ns() - start_ns
        with self._lock:
            self.counters.tracker_resets = self.tracker.resets
            # Its own stage only: the DetectionList went out within its budgets or not already.
            self._count_by_stage(self._stages_over_budget({"tracking": tracking_ns}))
        if tracks is None:
            return None
        return replace(tracks, timings_ns={**detections.timings_ns, "tracking": tracking_ns})

    def _track(self, chosen: ReadyBundle, detections: DetectionList) -> TrackList | None:
        """The tracker updated with one sweep's detections; its confirmed tracks. A new lidar
        clock timeline (a confirmed jump) starts it over."""
        bundle = chosen.bundle
        try:
            if chosen.epoch != self._tracker_epoch:
                self.tracker.reset()
                self._tracker_epoch = chosen.epoch
            pose = bundle.ego_pose
            vehicle_pose = None
            if pose is not None and not pose.stale:
                vehicle_pose = world_from_vehicle(pose, bundle.rig.gnss_lever_arm_m)
            stamp_ns = detections.header.stamp_ns
            tracks = self.tracker.update(detections.detections, stamp_ns, vehicle_pose)
        except Exception as e:  # the detections still go out
            with self._lock:
                self.counters.tracking_errors += 1
            seq = bundle.lidar.header.seq
            self._bad.warning("tracking", f"tracking failed on sweep {seq}: {e!r}")
            return None
        if tracks is None:
            return None
        header = Header(
            self.config.outputs.tracks_topic, detections.header.seq, stamp_ns, "vehicle"
        )
        return TrackList(header, tracks, self.tracker.world_frame, resets=self.tracker.resets)

    def after_publish(self) -> None:
        """Work kept off the hot path, run once the outputs of `on_bundles` are published: the
        calibration monitor on the sweep when it is one it uses (here, on the caller's thread:
        the offline replay; the live node hands the frame to a thread of its own with
        `take_calibration_frame` and `observe_calibration`)."""
        frame = self.take_calibration_frame()
        if frame is not None:
            self.observe_calibration(frame)

    def take_calibration_frame(self) -> StepFrame | None:
        """The sweep the calibration monitor is due to observe, once (None: none is due)."""
        frame, self._calibration_pending = self._calibration_pending, None
        return None if self.calibration is None else frame

    def skip_calibration_frame(self) -> None:
        """A due sweep the monitor was too busy to take (the live node's monitor thread was
        still on an earlier one): counted, not queued."""
        with self._lock:
            self.counters.calibration_skipped += 1

    def defer_calibration_frame(self) -> None:
        """A due sweep passed over because the monitor has spent its CPU budget
        (`calibration_monitor.budget_ms_per_sweep`): counted, not queued."""
        with self._lock:
            self.counters.calibration_over_budget += 1

    def observe_calibration(self, frame: StepFrame) -> int:
        """The calibration monitor on one sweep: timed, and a failure counted, never raised.
        Returns the CPU time it took on the calling thread, ns (0 without a monitor)."""
        if self.calibration is None:
            return 0
        start_ns = time.perf_counter_ns()
        start_cpu_ns = time.thread_time_ns()
        failed = False
        try:
            self.calibration.observe(frame)
        except Exception as e:  # the monitor must not cost the node
            failed = True
            self._bad.warning("calibration", f"calibration monitor failed: {_what(e)}")
        cpu_ns = time.thread_time_ns() - start_cpu_ns
        spent_ns = time.perf_counter_ns() - start_ns
        with self._lock:
            self.counters.calibration_ns += spent_ns
            self.counters.calibration_cpu_ns += cpu_ns
            if failed:
                self.counters.calibration_errors += 1
            else:
                self.counters.calibration_sweeps += 1
        return cpu_ns

    def count_loop_error(self) -> None:
        """An exception a thread of the node caught and survived."""
        with self._lock:
            self.counters.loop_errors += 1

    def count_receiver_restart(self) -> None:
        """The watchdog replaced a receiver that died or stalled."""
        with self._lock:
            self.counters.receiver_restarts += 1

    def record_rejections(self, publishers: int, subscribers: int) -> None:
        """The handshakes refused so far on the live node's sockets (see NodeCounters)."""
        with self._lock:
            self.counters.rejected_publishers = publishers
            self.counters.rejected_subscribers = subscribers

    def record_input_notes(self, notes: tuple[str, ...]) -> None:
        """Conditions of the live node's inputs the diagnostics carry as notes (see
        perception.node.input_hosts)."""
        with self._lock:
            self._input_notes = tuple(notes)

    def record_publish(self, duration_ns: int) -> None:
        """How long the last DetectionList took to publish (or write); the next one carries
        it."""
        with self._lock:
            self._last_publish_ns = int(duration_ns)

    def _host_stamp_ns(self, bundle: SyncedBundle) -> int:
        """The sweep stamp on the host clock: moved by the lidar clock's estimated offset when
        `budgets.apply_clock_offset` (and the estimate has its sweeps), else as it is."""
        stamp_ns: int = bundle.lidar.header.stamp_ns
        if self.config.budgets.apply_clock_offset:
            host = self.clocks.to_host_ns(
                self.config.inputs.lidar_topic, stamp_ns, min_samples=CLOCK_MIN_SWEEPS
            )
            if host is not None:
                return host
        return stamp_ns

    def _transport_ns(self, ready: ReadyBundle, host_stamp_ns: int) -> int:
        """From the sweep's last point (on the host clock) to its receipt; 0 when the clocks
        put it the other way (a clock estimate ahead of this sweep's delay)."""
        bundle = ready.bundle
        receive_ns = ready.ready_ns - bundle.sync_wait_ns
        end_ns = host_stamp_ns + (sweep_end_ns(bundle.lidar) - bundle.lidar.header.stamp_ns)
        return min(max(receive_ns - end_ns, 0), INT64_MAX)

    def _latency_ns(self, ready: ReadyBundle, host_stamp_ns: int, waited_ns: int) -> int:
        """Sensor stamp (on the host clock) to now; see the module docstring."""
        bundle = ready.bundle
        receive_ns = ready.ready_ns - bundle.sync_wait_ns
        latency_ns = int(receive_ns - host_stamp_ns + bundle.sync_wait_ns + waited_ns)
        # Saturated: a clock estimate gone wild must not make the output unencodable (int64).
        return min(max(latency_ns, INT64_MIN), INT64_MAX)

    def _check_budgets(self, timings: dict[str, int], latency_ns: int) -> bool:
        """Counts this frame's overruns; True when every budget held."""
        over = self._stages_over_budget(timings)
        if latency_ns > self.config.budgets.end_to_end_ms * 1e6:
            over.append("end_to_end")
        self._count_by_stage(over)
        counters = self.counters
        if over:
            counters.budget_overruns += 1
            counters.consecutive_overruns += 1
            counters.longest_overrun_run = max(
                counters.longest_overrun_run, counters.consecutive_overruns
            )
        else:
            counters.consecutive_overruns = 0
        return not over

    def _stages_over_budget(self, timings: Mapping[str, int]) -> list[str]:
        """The stages of `timings` over their budget (`budgets.stages_ms`)."""
        return [
            stage
            for stage, limit_ms in self.config.budgets.stages_ms.items()
            if timings.get(stage, 0) > limit_ms * 1e6
        ]

    def _count_by_stage(self, stages: Sequence[str]) -> None:
        """One overrun more for each of `stages` (under the lock)."""
        by_stage = self.counters.overruns_by_stage
        for stage in stages:
            by_stage[stage] = by_stage.get(stage, 0) + 1

    # -- diagnostics -----------------------------------------------------------------------

    def diagnostics(self, stamp_ns: int) -> Diagnostics:
        """The node's state at `stamp_ns` (the receive clock: host time live, recorded time
        offline); sensors that died or came back since the last call are logged."""
        with self._lock:
            sensors = self.liveness.status(stamp_ns)
            status = self.liveness.overall(stamp_ns)
            self._log_liveness(sensors, stamp_ns)
            stats = self.bundler.stats
            sync = {k: v for k, v in asdict(stats).items() if isinstance(v, int)}
            seq = self._diagnostics_seq
            self._diagnostics_seq += 1
            watch = self.calibration
            calibration = () if watch is None else watch.statuses()
            clocks = self.clocks.diagnostics()
            apart = self._clocks_apart(clocks)
            phases = self._phase_notes()
            if apart and status == "ok":
                status = "degraded"  # the camera is heard, but nothing it sends is used
            return Diagnostics(
                header=Header(self.config.outputs.diagnostics_topic, seq, stamp_ns, ""),
                counters=self.counters.scalars(),
                overruns_by_stage=dict(self.counters.overruns_by_stage),
                sync=sync,
                missing_by_stream=dict(stats.per_stream_missing),
                late_by_stream=dict(stats.per_stream_late),
                clocks=tuple(clocks.values()),
                budgets_ms={
                    "end_to_end": self.config.budgets.end_to_end_ms,
                    **self.config.budgets.stages_ms,
                },
                last_publish_ns=self._last_publish_ns,
                last_latency_ns=self._last_latency_ns,
                engines=self.pipeline.describe_engines(),
                notes=(
                    *self.pipeline.notes,
                    *self._input_notes,
                    *(() if watch is None else watch.notes()),
                    *apart,
                    *phases,
                ),
                realtime=self.realtime,
                sensors=sensors,
                status=status,
                calibration=calibration,
            )

    def _clocks_apart(self, clocks: Mapping[str, SensorClock]) -> list[str]:
        """A note for each camera whose clock is `CLOCKS_APART_NS` or more from the lidar's (one
        of them stepped alone, or they were never synchronised), logged at a bounded rate: its
        frames pair with no sweep, and the outputs go without it."""
        lidar = clocks.get(self.config.inputs.lidar_topic)
        if lidar is None or lidar.offset_ns is None:
            return []
        notes = []
        for topic in self.config.inputs.camera_topics:
            camera = clocks.get(topic)
            if camera is None or camera.offset_ns is None:
                continue
            apart_ns = camera.offset_ns - lidar.offset_ns
            if abs(apart_ns) >= CLOCKS_APART_NS:
                note = (
                    f"{topic}: its clock is {-apart_ns / 1e9:+.3f} s from the lidar's "
                    f"({self.config.inputs.lidar_topic}), so its frames pair with no sweep and "
                    "the outputs go without it: check the sensors' time synchronisation"
                )
                self._bad.warning(f"clocks:{topic}", note)
                notes.append(note)
        return notes

    def _log_liveness(self, sensors: Sequence[SensorStatus], now_ns: int) -> None:
        # A stream not yet heard from is not alive, but it is silent only once its periods have
        # passed (`_silent`): a replay's first diagnostics, at its first message, would
        # otherwise call every sensor silent and then alive again.
        if self._first_diagnostics_ns is None:
            self._first_diagnostics_ns = now_ns
        never = {s.stream for s in sensors if s.messages == 0}
        dead = {s.stream for s in sensors if self._silent(s.stream, now_ns)}
        for stream in sorted(dead - self._dead):
            if stream in never:
                # Never heard from: silent since the node started, not for periods of a rate it
                # never showed.
                log.warning("%s: no message since the node started", stream)
                continue
            log.warning("%s: no message for %g periods: dead (bundles go out without it)",
                        stream, self.config.inputs.dead_after_periods)  # fmt: skip
        for stream in sorted(self._dead - dead):
            log.warning("%s: alive again", stream)
        self._dead = dead
        stale = dead == {s.stream for s in sensors}
        if stale and not self._stale:
            log.warning("every input is stale: no sensor has sent for its dead_after_periods")
        self._stale = stale

    def _silent(self, stream: str, now_ns: int) -> bool:
        """Whether `stream` has been silent for its periods at `now_ns` (dead, as the liveness
        judges it; while no stream at all has been heard from, since the first diagnostics)."""
        if self.liveness.death_ns(stream) is not None:
            return self.liveness.dead(stream, now_ns)
        assert self._first_diagnostics_ns is not None
        return now_ns - self._first_diagnostics_ns >= self.liveness.grace_ns(stream)


def _what(e: Exception) -> str:
    """An exception in a line, even one whose text cannot be made (it may hold the hostile
    value that caused it, nested past the recursion limit)."""
    try:
        text = str(e)
    except Exception:
        text = "(no description)"
    return f"{type(e).__name__}: {text[:300]}"


def _filed(ready: list[ReadyBundle], filing_ns: int) -> list[ReadyBundle]:
    """`ready` handed on `filing_ns` after the receipt of the message that made them due (none
    was handed on before it was decoded and filed)."""
    return [replace(r, filing_ns=filing_ns) for r in ready] if ready else ready
