"""Pairs each lidar sweep (the reference) with the nearest camera frames.

Walking-skeleton policy: for every camera stream, the frame nearest in time to the sweep within
`window_ns`; a sweep is emitted as soon as every camera has a frame within its window, or when
`timeout_ns` of host time has passed since the sweep arrived, then with the missing cameras
listed. A camera frame
is used by at most one bundle. The Time synchronisation issue replaces this with the collector
and ApproximateTime policies.

The same object serves the live node (host receive times) and offline replay (simulated
receive times), so both pair identically given the same arrival order.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from calibration import Rig
from perception.config import SyncConfig
from perception.messages import CameraFrame, GnssFix, LidarSweep, Message, RigMessage, SyncedBundle

__all__ = ["NearestSync", "SyncStats"]


@dataclass
class SyncStats:
    """Counters of what the synchroniser dropped; read by diagnostics."""

    bundles: int = 0
    degraded_bundles: int = 0
    dropped_sweeps_no_rig: int = 0
    dropped_sweeps_queue_full: int = 0
    dropped_cameras_queue_full: int = 0
    unknown_streams: int = 0
    per_stream_missing: dict[str, int] = field(default_factory=dict)


@dataclass
class _PendingSweep:
    sweep: LidarSweep
    receive_ns: int
    decode_ns: int


class NearestSync:
    """Nearest-frame synchroniser keyed by the lidar sweep stamp.

    `add_*` take each message with its host receive time (ns) and decode duration (ns);
    `poll(now_ns)` returns the bundles that became complete or timed out, oldest first.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        *,
        window_ns: int,
        timeout_ns: int,
        gnss_window_ns: int = 500_000_000,
        queue_size: int = 20,
        default_rig: Any = None,
    ) -> None:
        self.camera_streams = camera_streams
        self.window_ns = window_ns
        self.timeout_ns = timeout_ns
        self.gnss_window_ns = gnss_window_ns
        self.queue_size = queue_size
        self.stats = SyncStats()
        self._sweeps: deque[_PendingSweep] = deque()
        self._cameras: dict[str, deque[tuple[CameraFrame, int]]] = {
            s: deque() for s in camera_streams
        }
        self._gnss: deque[GnssFix] = deque(maxlen=queue_size * 5)
        # (stamp_ns, rig) in stamp order; a rig holds from its stamp until the next one.
        self._rigs: list[tuple[int, Any]] = [] if default_rig is None else [(-1, default_rig)]

    @classmethod
    def from_config(
        cls, camera_streams: tuple[str, ...], config: SyncConfig, default_rig: Any = None
    ) -> NearestSync:
        return cls(
            camera_streams,
            window_ns=int(config.window_ms * 1e6),
            timeout_ns=int(config.timeout_ms * 1e6),
            gnss_window_ns=int(config.gnss_window_ms * 1e6),
            queue_size=config.queue_size,
            default_rig=default_rig,
        )

    def add(self, msg: Message, receive_ns: int, decode_ns: int = 0) -> None:
        """File any input message. Raises calibration.CalibrationError for an invalid rig
        message and TypeError for a message type that is not an input."""
        if isinstance(msg, LidarSweep):
            self.add_sweep(msg, receive_ns, decode_ns)
        elif isinstance(msg, CameraFrame):
            self.add_camera(msg, decode_ns)
        elif isinstance(msg, GnssFix):
            self.add_gnss(msg)
        elif isinstance(msg, RigMessage):
            source = f"{msg.header.stream} message {msg.header.seq}"
            self.add_rig(msg.header.stamp_ns, Rig.from_dict(msg.rig, source=source))
        else:
            raise TypeError(f"{type(msg).__name__} is not a sensor input")

    def add_sweep(self, sweep: LidarSweep, receive_ns: int, decode_ns: int = 0) -> None:
        if len(self._sweeps) >= self.queue_size:
            self._sweeps.popleft()
            self.stats.dropped_sweeps_queue_full += 1
        self._sweeps.append(_PendingSweep(sweep, receive_ns, decode_ns))

    def add_camera(self, frame: CameraFrame, decode_ns: int = 0) -> None:
        queue = self._cameras.get(frame.header.stream)
        if queue is None:
            self.stats.unknown_streams += 1
            return
        if len(queue) >= self.queue_size:
            queue.popleft()
            self.stats.dropped_cameras_queue_full += 1
        queue.append((frame, decode_ns))

    def add_gnss(self, fix: GnssFix) -> None:
        self._gnss.append(fix)

    def add_rig(self, stamp_ns: int, rig: Any) -> None:
        keys = [s for s, _ in self._rigs]
        i = bisect.bisect_right(keys, stamp_ns)
        if i > 0 and keys[i - 1] == stamp_ns:
            self._rigs[i - 1] = (stamp_ns, rig)
        else:
            self._rigs.insert(i, (stamp_ns, rig))
        # Rigs older than the oldest pending sweep are never needed again, except the one in force.
        while len(self._rigs) > self.queue_size:
            self._rigs.pop(0)

    def _rig_at(self, stamp_ns: int) -> Any:
        keys = [s for s, _ in self._rigs]
        i = bisect.bisect_right(keys, stamp_ns)
        return self._rigs[i - 1][1] if i > 0 else None

    def _nearest_camera(self, stream: str, stamp_ns: int) -> int:
        """Index of the nearest queued frame within the window, or -1."""
        best, best_dt = -1, self.window_ns + 1
        for i, (frame, _) in enumerate(self._cameras[stream]):
            dt = abs(frame.header.stamp_ns - stamp_ns)
            if dt < best_dt:
                best, best_dt = i, dt
        return best

    def poll(self, now_ns: int) -> list[SyncedBundle]:
        out: list[SyncedBundle] = []
        while self._sweeps:
            pending = self._sweeps[0]
            stamp = pending.sweep.header.stamp_ns
            choice = {s: self._nearest_camera(s, stamp) for s in self.camera_streams}
            complete = all(i >= 0 for i in choice.values())
            timed_out = now_ns - pending.receive_ns >= self.timeout_ns
            if not (complete or timed_out):
                break
            self._sweeps.popleft()
            rig = self._rig_at(stamp)
            if rig is None:
                self.stats.dropped_sweeps_no_rig += 1
                continue
            cameras: dict[str, CameraFrame] = {}
            skews: dict[str, int] = {}
            decode_ns = pending.decode_ns
            missing: list[str] = []
            for stream, index in choice.items():
                if index < 0:
                    missing.append(stream)
                    self.stats.per_stream_missing[stream] = (
                        self.stats.per_stream_missing.get(stream, 0) + 1
                    )
                    continue
                queue = self._cameras[stream]
                frame, cam_decode_ns = queue[index]
                # Frames older than the chosen one can only pair with older sweeps: drop them.
                for _ in range(index + 1):
                    queue.popleft()
                cameras[stream] = frame
                skews[stream] = frame.header.stamp_ns - stamp
                decode_ns += cam_decode_ns
            gnss = self._nearest_gnss(stamp)
            if gnss is not None:
                skews[gnss.header.stream] = gnss.header.stamp_ns - stamp
            self.stats.bundles += 1
            self.stats.degraded_bundles += bool(missing)
            out.append(
                SyncedBundle(
                    lidar=pending.sweep,
                    cameras=cameras,
                    rig=rig,
                    gnss=gnss,
                    missing=tuple(missing),
                    skews_ns=skews,
                    decode_ns=decode_ns,
                    sync_wait_ns=max(0, now_ns - pending.receive_ns),
                )
            )
        return out

    def _nearest_gnss(self, stamp_ns: int) -> GnssFix | None:
        best: GnssFix | None = None
        for fix in self._gnss:
            dt = abs(fix.header.stamp_ns - stamp_ns)
            if dt <= self.gnss_window_ns and (
                best is None or dt < abs(best.header.stamp_ns - stamp_ns)
            ):
                best = fix
        return best
