"""The bundler: input messages in, SyncedBundles out, with a sync policy choosing the sets.

The policy (perception.sync.policy: the collector or ApproximateTime) decides which sweep and
camera frames belong together and when a set is out. The bundler owns what every policy shares:
the rig in force at the sweep stamp (from RigMessages, validated by calibration), the nearest
GNSS fix, the GNSS ego poses at the sweep's start and end, the counters (SyncStats) and the
SyncedBundle itself.

`add` never raises for a bad message: it answers with an `AddResult` saying what it did (a
rejected rig document is BAD_RIG, a non-input type NOT_AN_INPUT, both counted), so the node and
offline replay drop and count the same way. With a `Liveness` (perception.sync.liveness) every
sensor message tells it its stream is alive, and the policy stops waiting for dead cameras;
`clock_jump` forgets what a stream's old clock placed (its buffered messages; for the lidar the
pending sweeps, and rigs are re-anchored) once perception.sync.clock has confirmed a jump.

The same object serves the live node (host receive times, `poll` on a timer) and offline replay
(simulated receive times, `flush` at the end of the input), so both give the same bundles for
the same arrivals.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from calibration import CalibrationError, Rig
from perception.config import SyncConfig
from perception.errors import ConfigError
from perception.msgs.types import (
    CameraFrame,
    GnssFix,
    LidarSweep,
    Message,
    RigMessage,
    SyncedBundle,
    sweep_end_ns,
)
from perception.sync.approximate_time import ApproximateTimeAdapter
from perception.sync.collector import CollectorPolicy
from perception.sync.ego import EgoPoseBuffer
from perception.sync.fix_gate import FixGate, FixVerdict
from perception.sync.liveness import Liveness
from perception.sync.policy import Filed, Filing, MatchedSet, SyncPolicy

__all__ = ["AddResult", "Bundler", "Filed", "SyncStats", "parse_rig"]

MS = 1_000_000

# `sync.policy` names -> how each policy is built from the config.
_POLICIES: dict[str, Callable[[tuple[str, ...], SyncConfig, Liveness | None], SyncPolicy]] = {
    "collector": CollectorPolicy.from_config,
    "approximate_time": ApproximateTimeAdapter.from_config,
}


@dataclass
class SyncStats:
    """Counters of what the bundler emitted and dropped; read by diagnostics. `bad_rigs`,
    `bad_fixes` and `not_inputs` count the messages `add` answered BAD_RIG, BAD_FIX and
    NOT_AN_INPUT; `*_queue_full` the messages dropped for a queue full in messages or bytes;
    `dead_camera_bundles` the degraded bundles that went out without waiting because a camera
    they lack was dead; `dropped_*_clock_reset` what a confirmed clock jump made the bundler
    forget; `position_jumps` the GNSS position jumps confirmed (perception.sync.fix_gate; a
    fix refused as a jump is a bad fix) and `dropped_fixes_position_jump` the fixes of the old
    track each forgot; `dropped_*_unmatched` what the policy dropped because no set could use
    it any more (ApproximateTime: passed over by a newer set, or unproved at the end of
    input); `bundles_without_fix` the bundles made while GNSS fixes were held, none of them
    within `gnss_window_ns` of the sweep stamp (their detections have no global position)."""

    bundles: int = 0
    degraded_bundles: int = 0
    dropped_sweeps_no_rig: int = 0
    dropped_sweeps_queue_full: int = 0
    dropped_cameras_queue_full: int = 0
    unknown_streams: int = 0
    late_messages: int = 0
    duplicate_messages: int = 0
    bad_rigs: int = 0
    bad_fixes: int = 0
    not_inputs: int = 0
    dead_camera_bundles: int = 0
    dropped_sweeps_clock_reset: int = 0
    dropped_cameras_clock_reset: int = 0
    dropped_fixes_clock_reset: int = 0
    position_jumps: int = 0
    dropped_fixes_position_jump: int = 0
    dropped_sweeps_unmatched: int = 0
    dropped_cameras_unmatched: int = 0
    bundles_without_fix: int = 0
    per_stream_missing: dict[str, int] = field(default_factory=dict)
    per_stream_late: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AddResult:
    """What `Bundler.add` did with a message. `reason` (BAD_RIG, NOT_AN_INPUT): the problem,
    naming the stream."""

    filed: Filed
    reason: str = ""


_RESULTS = {filed: AddResult(filed) for filed in Filed}
_ACCEPTED = _RESULTS[Filed.ACCEPTED]
# A module global is read in a tenth of the time an enum member is: this one is on every add.
_FILED_ACCEPTED = Filed.ACCEPTED


def _fix_problem(fix: GnssFix) -> str:
    """What makes a fix unusable for the ego poses ("" if nothing): the decoder rejects such
    fixes, but a fix built in-process is not decoded, and one NaN would poison every pose
    interpolated from it."""
    isfinite = math.isfinite
    lat, lon, alt = fix.latitude_deg, fix.longitude_deg, fix.altitude_m
    if not (isfinite(lat) and isfinite(lon) and isfinite(alt) and -90.0 <= lat <= 90.0):
        return f"fix {fix.header.seq}: invalid (lat, lon, alt) {(lat, lon, alt)}"
    heading, velocity = fix.heading_rad, fix.velocity_enu_mps
    if heading is not None and not isfinite(heading):
        return f"fix {fix.header.seq}: non-finite heading {heading}"
    if velocity is not None and not (
        isfinite(velocity[0]) and isfinite(velocity[1]) and isfinite(velocity[2])
    ):
        return f"fix {fix.header.seq}: non-finite velocity {velocity}"
    return ""


def parse_rig(msg: RigMessage) -> Rig | CalibrationError:
    """The rig a rig message carries, or the CalibrationError that refuses it (naming the
    stream and message). Slow for a big document (about 30 us a frame), and touches nothing
    else: a caller holding a lock parses first, then files the result with `Bundler.add`."""
    try:
        rig = Rig.from_dict(msg.rig, source=f"{msg.header.stream} message {msg.header.seq}")
    except CalibrationError as e:
        return e
    # Made here, outside the caller's lock: `Bundler.add` compares it with the rig in use.
    _ = rig.calibration_digest
    return rig


class Bundler:
    """Builds SyncedBundles from input messages, with `policy` choosing the sets.

    `add(msg, receive_ns, decode_ns)` files a message with its host receive time and decode
    duration (ns); `poll(now_ns)` returns the bundles complete or due at host time `now_ns`;
    `flush()` ends the input. The nearest GNSS fix within `gnss_window_ns` of the sweep stamp
    joins each bundle; `queue_size` bounds the rigs kept, and the GNSS fixes kept (5 x). A sweep
    with no rig in force at its stamp (`default_rig` holds from the beginning) is dropped and
    counted. `liveness`: told of every message (the policy should be built with the same one);
    None: liveness is not tracked. Raises ValueError if `camera_streams` differ from the
    policy's, for a queue size < 1 or a negative GNSS window.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        policy: SyncPolicy,
        *,
        gnss_window_ns: int,
        queue_size: int,
        default_rig: Rig | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        if tuple(policy.camera_streams) != tuple(camera_streams):
            raise ValueError(
                f"camera streams {camera_streams} differ from the policy's {policy.camera_streams}"
            )
        if queue_size < 1 or gnss_window_ns < 0:
            raise ValueError("queue_size must be >= 1 and gnss_window_ns >= 0")
        self.camera_streams = camera_streams
        self.gnss_window_ns = gnss_window_ns
        self.queue_size = queue_size
        self.stats = SyncStats()
        self.liveness = liveness
        self._policy = policy
        self._gnss: deque[GnssFix] = deque(maxlen=queue_size * 5)
        self._ego = EgoPoseBuffer(capacity=queue_size * 5)
        self._fix_gate = FixGate()
        # (stamp_ns, rig) in stamp order; a rig holds from its stamp until the next one.
        self._rigs: list[tuple[int, Rig]] = [] if default_rig is None else [(-1, default_rig)]
        # The rig received last (the sender's current calibration, whatever its stamp).
        self._last_rig = default_rig
        # The latest receive time seen: `flush` ends the input there.
        self._last_receive_ns = -(2**63)

    @classmethod
    def from_config(
        cls,
        camera_streams: tuple[str, ...],
        config: SyncConfig,
        default_rig: Rig | None = None,
        liveness: Liveness | None = None,
    ) -> Bundler:
        """Build from the node config (milliseconds there, ns here) with the policy it names,
        both using `liveness` when given. Raises perception.errors.ConfigError for an unknown
        `sync.policy`, ValueError for values the policy rejects."""
        build = _POLICIES.get(config.policy)
        if build is None:
            known = " or ".join(repr(name) for name in _POLICIES)
            raise ConfigError(f"sync.policy: unknown policy {config.policy!r} (use {known})")
        return cls(
            camera_streams,
            build(camera_streams, config, liveness),
            gnss_window_ns=round(config.gnss_window_ms * MS),
            queue_size=config.queue_size,
            default_rig=default_rig,
            liveness=liveness,
        )

    @property
    def policy(self) -> SyncPolicy:
        """The policy choosing the sets."""
        return self._policy

    # ------------------------------------------------------------------ input

    def add(
        self,
        msg: Message,
        receive_ns: int,
        decode_ns: int = 0,
        *,
        parsed_rig: Rig | CalibrationError | None = None,
    ) -> AddResult:
        """File any message received at host time `receive_ns` (ns) that took `decode_ns` to
        decode. Never raises for a bad message: the result says what was done with it (GNSS
        fixes and rigs are taken from any stream; sweeps and frames as the policy decides).
        `parsed_rig`: a RigMessage's `parse_rig` result, when the caller parsed it already (the
        node core does, outside its lock)."""
        self._last_receive_ns = max(self._last_receive_ns, receive_ns)
        if self.liveness is not None:
            header = getattr(msg, "header", None)
            self.liveness.seen(getattr(header, "stream", ""), receive_ns)
        # Cameras first: most messages are frames. Counting is skipped on the common path.
        if isinstance(msg, CameraFrame):
            filing = self._policy.add_camera(msg, receive_ns, decode_ns)
            if filing.evicted:
                self.stats.dropped_cameras_queue_full += filing.evicted
            return _ACCEPTED if filing.filed is _FILED_ACCEPTED else self._counted(filing, msg)
        if isinstance(msg, LidarSweep):
            filing = self._policy.add_sweep(msg, receive_ns, decode_ns)
            if filing.evicted:
                self.stats.dropped_sweeps_queue_full += filing.evicted
            return _ACCEPTED if filing.filed is _FILED_ACCEPTED else self._counted(filing, msg)
        if isinstance(msg, GnssFix):
            problem = _fix_problem(msg)
            if problem:
                self.stats.bad_fixes += 1
                return AddResult(Filed.BAD_FIX, f"{msg.header.stream}: {problem}")
            verdict = self._fix_gate.judge(msg)
            if verdict is FixVerdict.REJECTED:
                self.stats.bad_fixes += 1
                return AddResult(
                    Filed.BAD_FIX,
                    f"{msg.header.stream}: fix {msg.header.seq} is "
                    f"{self._fix_gate.last_jump_m:.0f} m from the last fix accepted, farther "
                    "than a vehicle drives in the time between (a receiver's outlier)",
                )
            if verdict is FixVerdict.ADOPTED:
                # Fixes in a row agree on the new place: the old track's poses are of another.
                self.stats.position_jumps += 1
                self.stats.dropped_fixes_position_jump += len(self._gnss)
                self._gnss.clear()
                self._ego = EgoPoseBuffer(capacity=self.queue_size * 5)
            self._gnss.append(msg)
            self._ego.add(msg)
            return _ACCEPTED
        if isinstance(msg, RigMessage):
            return self._add_rig(msg, parse_rig(msg) if parsed_rig is None else parsed_rig)
        self.stats.not_inputs += 1
        header = getattr(msg, "header", None)
        stream = getattr(header, "stream", "?")
        return AddResult(
            Filed.NOT_AN_INPUT, f"{stream}: {type(msg).__name__} is not a sensor input"
        )

    def _counted(self, filing: Filing, msg: CameraFrame | LidarSweep) -> AddResult:
        """Counts a message the policy did not accept."""
        filed = filing.filed
        stream = msg.header.stream
        if filed is Filed.DUPLICATE:
            self.stats.duplicate_messages += 1
        elif filed is Filed.LATE:
            self.stats.late_messages += 1
            self.stats.per_stream_late[stream] = self.stats.per_stream_late.get(stream, 0) + 1
        elif filed is Filed.UNKNOWN_STREAM:
            self.stats.unknown_streams += 1
        return _RESULTS[filed]

    def _add_rig(self, msg: RigMessage, parsed: Rig | CalibrationError) -> AddResult:
        """The message's rig in force from its stamp until the next one, or BAD_RIG (counted)
        with the error's words."""
        if isinstance(parsed, CalibrationError):
            self.stats.bad_rigs += 1
            return AddResult(Filed.BAD_RIG, str(parsed))
        rig = parsed
        last = self._last_rig
        if (
            last is not None
            and last is not rig
            and rig.calibration_digest == last.calibration_digest
        ):
            # The same calibration sent again (a latched topic, a looped drive): keep the rig
            # already in use, whose cameras have built their undistortion maps (3.6 MB for a
            # KITTI-sized image); each copy would build its own, `queue_size` of them held.
            rig = last
        stamp_ns = msg.header.stamp_ns
        self._last_rig = rig
        keys = [s for s, _ in self._rigs]
        i = bisect.bisect_right(keys, stamp_ns)
        if i > 0 and keys[i - 1] == stamp_ns:
            self._rigs[i - 1] = (stamp_ns, rig)
        else:
            self._rigs.insert(i, (stamp_ns, rig))
        while len(self._rigs) > self.queue_size:
            self._rigs.pop(0)
        return _ACCEPTED

    def clock_jump(self, msg: Message) -> int:
        """`msg`'s stream had a confirmed clock jump (perception.sync.clock), and `msg` is the
        first message on its new timeline: forget what the old one placed. A sweep drops the
        pending sweeps (and the emitted stamps: new ones may repeat them) and re-anchors the
        rigs (the one received last holds from the beginning: a rig stamped on the old
        timeline must not leave the new sweeps without one); a camera frame drops that camera's
        buffered frames; a fix drops the fixes and ego poses. Returns the messages dropped
        (counted)."""
        stats = self.stats
        if isinstance(msg, LidarSweep):
            dropped = self._policy.reset_sweeps()
            stats.dropped_sweeps_clock_reset += dropped
            if self._last_rig is not None:
                self._rigs = [(-1, self._last_rig)]
        elif isinstance(msg, CameraFrame):
            dropped = self._policy.reset_camera(msg.header.stream)
            stats.dropped_cameras_clock_reset += dropped
        elif isinstance(msg, GnssFix):
            dropped = len(self._gnss)
            self._gnss.clear()
            self._ego = EgoPoseBuffer(capacity=self.queue_size * 5)
            self._fix_gate.reset()
            stats.dropped_fixes_clock_reset += dropped
        else:
            dropped = 0
        return dropped

    # ----------------------------------------------------------------- output

    def next_deadline_ns(self) -> int | None:
        """Host time (ns) at which the earliest pending bundle falls due; None if none will
        without further input."""
        return self._policy.next_deadline_ns()

    def poll(self, now_ns: int) -> list[SyncedBundle]:
        """Bundles complete or due at host time `now_ns`, in sweep stamp order."""
        sets = self._policy.ready(now_ns)
        # A policy drops what no set can use while it files messages: counted as of now.
        self.stats.dropped_sweeps_unmatched, self.stats.dropped_cameras_unmatched = (
            self._policy.unmatched
        )
        return self._bundles(sets) if sets else []

    def flush(self) -> list[SyncedBundle]:
        """End of input (offline replay): the bundles `poll` gives at the latest receive time,
        then everything still pending, each as the live node would emit it at its deadline
        (degraded, `sync_wait_ns` = the timeout). Nothing stays pending."""
        sets = self._policy.drain(self._last_receive_ns)
        self.stats.dropped_sweeps_unmatched, self.stats.dropped_cameras_unmatched = (
            self._policy.unmatched
        )
        return self._bundles(sets)

    def _bundles(self, sets: list[MatchedSet]) -> list[SyncedBundle]:
        out: list[SyncedBundle] = []
        for matched in sets:
            bundle = self._bundle(matched)
            if bundle is not None:
                out.append(bundle)
        return out

    def _bundle(self, matched: MatchedSet) -> SyncedBundle | None:
        """The bundle of a matched set (None, counted, without a rig)."""
        sweep, cameras = matched.sweep, matched.cameras
        stamp = sweep.header.stamp_ns
        missing = [s for s in self.camera_streams if s not in cameras]
        for stream in missing:
            self.stats.per_stream_missing[stream] = self.stats.per_stream_missing.get(stream, 0) + 1
        if missing and self.liveness is not None:
            live = self.liveness
            self.stats.dead_camera_bundles += any(live.dead(s, matched.ready_ns) for s in missing)
        rig = self.rig_at(stamp)
        if rig is None:
            self.stats.dropped_sweeps_no_rig += 1
            return None
        skews = {s: f.header.stamp_ns - stamp for s, f in cameras.items()}
        gnss = self._nearest_gnss(stamp)
        if gnss is not None:
            skews[gnss.header.stream] = gnss.header.stamp_ns - stamp
        elif self._gnss:
            self.stats.bundles_without_fix += 1
        self.stats.bundles += 1
        self.stats.degraded_bundles += bool(missing)
        return SyncedBundle(
            lidar=sweep,
            cameras=cameras,
            rig=rig,
            gnss=gnss,
            missing=tuple(missing),
            skews_ns=skews,
            decode_ns=matched.decode_ns,
            sync_wait_ns=max(0, matched.ready_ns - matched.receive_ns),
            ego_pose=self._ego.pose_at(stamp),
            ego_pose_end=self._ego.pose_at(sweep_end_ns(sweep)),
        )

    def rig_at(self, stamp_ns: int, *, or_first: bool = False) -> Rig | None:
        """The rig in force at `stamp_ns` (the one a bundle stamped then is made with); with
        `or_first`, the first rig for a stamp before it (a stamp on a sensor clock behind the
        common one, whose rig says by how much)."""
        keys = [s for s, _ in self._rigs]
        i = bisect.bisect_right(keys, stamp_ns)
        if i == 0:
            return self._rigs[0][1] if or_first and self._rigs else None
        return self._rigs[i - 1][1]

    def _nearest_gnss(self, stamp_ns: int) -> GnssFix | None:
        best: GnssFix | None = None
        for fix in self._gnss:
            dt = abs(fix.header.stamp_ns - stamp_ns)
            if dt <= self.gnss_window_ns and (
                best is None or dt < abs(best.header.stamp_ns - stamp_ns)
            ):
                best = fix
        return best
