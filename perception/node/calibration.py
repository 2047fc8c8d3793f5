"""The node's calibration watch: a calibration monitor (calibration.monitor) per camera, fed
from what the pipeline worked on, off the hot path.

`NodeCore` hands it one processed sweep in `every_n_sweeps` after the sweep's outputs are
published. For each camera that was fused, the sweep's points (deskewed, vehicle frame) are
moved to the camera's exposure with the vehicle's motion, the points on detected objects are
left out (an object moves between the lidar's and the camera's instants), and the monitor gets
them with the raw image and the odometer (from the GNSS twist), so that a stopped vehicle adds
no evidence. A new rig restarts a camera's monitor (the extrinsic in force changed), unless
`pool_rigs` is set (the offline check of KITTI frames pools frames that each carry their own
calibration).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration import CameraModel, Rig, RigidTransform
from calibration.check import draw_before_after
from calibration.monitor import (
    SKIP_STILL,
    CalibrationEstimate,
    CalibrationMonitor,
    Correction,
    MonitorState,
    apply_correction,
    no_evidence_text,
    skip_text,
)
from calibration.rig import VEHICLE_FRAME, camera_frame
from perception.config import CalibrationMonitorConfig
from perception.msgs.types import CalibrationStatus
from perception.pipeline.pipeline import StepFrame

__all__ = [
    "BLIND_AFTER_FRAMES",
    "CalibrationView",
    "CalibrationWatch",
    "CpuBudget",
    "blind_note",
    "drift_notes",
    "status_of",
]

log = logging.getLogger(__name__)

#: The points handed to the monitors: at most this many times its `max_points` of a sweep.
SHARE = 6


class CpuBudget:
    """A bound on a thread's CPU time per processed sweep on average (a token bucket): each
    sweep adds ``per_sweep_ns`` of credit, up to ``burst_ns`` ahead; work spends it; while the
    credit is spent, `allows` is false. ``per_sweep_ns`` 0: no bound. Not thread safe."""

    def __init__(self, per_sweep_ns: int, burst_ns: int) -> None:
        self.per_sweep_ns = per_sweep_ns
        self.burst_ns = burst_ns
        self.credit_ns = burst_ns

    @staticmethod
    def of(config: CalibrationMonitorConfig) -> CpuBudget:
        """The budget of `config` (`budget_ms_per_sweep`, `budget_burst_ms`)."""
        return CpuBudget(
            round(config.budget_ms_per_sweep * 1e6), round(config.budget_burst_ms * 1e6)
        )

    def accrue(self, sweeps: int) -> None:
        """``sweeps`` more sweeps were processed."""
        self.credit_ns = min(self.credit_ns + sweeps * self.per_sweep_ns, self.burst_ns)

    def allows(self) -> bool:
        """Whether the work may run now."""
        return self.per_sweep_ns == 0 or self.credit_ns > 0

    def spend(self, ns: int) -> None:
        """The work took ``ns``."""
        if self.per_sweep_ns:
            self.credit_ns -= ns


@dataclass(frozen=True, eq=False)
class CalibrationView:
    """The last frame a camera's monitor used, to draw it: the camera's image, the sweep's
    points (vehicle frame at the sweep's stamp) and the vehicle's motion to the exposure, the
    camera model and the extrinsic watched. References to what the frame held: no copies."""

    image: npt.NDArray[np.uint8]
    points: npt.NDArray[np.float32]
    motion: RigidTransform
    camera: CameraModel
    vehicle_from_camera: RigidTransform

    def draw(
        self, checked: str, correction: Correction | None = None, corrected: str = ""
    ) -> npt.NDArray[np.uint8]:
        """The points on the image with the extrinsic checked (titled `checked`) and, below,
        with it corrected by `correction` (titled `corrected`; None: the checked one alone)."""
        panels = [(self.vehicle_from_camera, checked)]
        if correction is not None:
            panels.append((apply_correction(self.vehicle_from_camera, correction), corrected))
        return draw_before_after(
            self.image, self.motion.apply(self.points[:, :3]), self.camera, panels
        )


#: A camera whose monitor found no evidence in this many frames in a row (a standing vehicle's
#: frames not counted) gets a note on the diagnostics: its extrinsic is not being checked.
BLIND_AFTER_FRAMES = 10


@dataclass
class _Camera:
    monitor: CalibrationMonitor
    rig: Rig
    view: CalibrationView | None = None
    #: Rigs watched before this one, and the frames their monitors were given (used or
    #: skipped): a verdict speaks of the current rig only, and an offline check over a whole
    #: drive says so when the drive's rig changed.
    earlier_rigs: int = 0
    earlier_frames: int = 0


class CalibrationWatch:
    """Monitors per camera (see the module docstring). Not thread safe: the node's processing
    thread calls `offer` and `observe`; `statuses` returns an immutable snapshot."""

    def __init__(
        self, config: CalibrationMonitorConfig, *, pool_rigs: bool = False, keep_views: bool = False
    ) -> None:
        self.config = config
        self.pool_rigs = pool_rigs
        #: Whether `view_of` keeps each camera's last frame used, to draw (offline checks, the
        #: demo). Off in the live node: a frame's arrays may be shared memory that a later
        #: message reuses (perception.io.shm), so none is held past its processing.
        self.keep_views = keep_views
        self._cameras: dict[str, _Camera] = {}
        self._offered = 0
        self._odometer_m = 0.0
        self._last_stamp_ns: int | None = None
        self._statuses: tuple[CalibrationStatus, ...] = ()
        self._notes: tuple[str, ...] = ()

    def offer(self) -> bool:
        """Count one processed sweep; whether it is one the watch uses."""
        due = self._offered % self.config.every_n_sweeps == 0
        self._offered += 1
        return due

    def observe(self, frame: StepFrame) -> None:
        """Feed each fused camera's monitor with one sweep (see the module docstring)."""
        travelled = self._travel(frame)
        # A share of the sweep is plenty (the monitor uses a few thousand points of what the
        # camera sees); moving the points to each exposure below need not cost a whole sweep.
        points = frame.points
        step = len(points) // (SHARE * self.config.monitor.max_points)
        if step > 1:
            points = points[self._offered % step :: step]
        for name, (image, motion) in sorted(frame.images.items()):
            vehicle_from_camera = frame.rig.transform(VEHICLE_FRAME, camera_frame(name))
            camera = frame.rig.cameras[name]
            entry = self._cameras.get(name)
            if entry is None or (not self.pool_rigs and entry.rig is not frame.rig):
                earlier = entry
                entry = _Camera(
                    CalibrationMonitor(camera, vehicle_from_camera, self.config.monitor), frame.rig
                )
                if earlier is not None:
                    entry.earlier_rigs = earlier.earlier_rigs + 1
                    entry.earlier_frames = (
                        earlier.earlier_frames + earlier.monitor.frames + earlier.monitor.skipped
                    )
                self._cameras[name] = entry
            at_exposure = np.array(points, dtype=np.float64, copy=True)
            ground = None if frame.ground is None else frame.ground.moved(motion)
            at_exposure[:, :3] = motion.apply(points[:, :3])
            turn = math.atan2(motion.rotation[1, 0], motion.rotation[0, 0])
            centres = motion.apply(np.array([d.center for d in frame.detections]).reshape(-1, 3))
            boxes = [
                (centre, d.size, d.yaw + turn)
                for centre, d in zip(centres, frame.detections, strict=True)
            ]
            used = entry.monitor.add(
                at_exposure,
                image,
                ground=None if ground is None else (*ground.normal, ground.offset),
                travelled_m=travelled,
                camera=camera if self.pool_rigs else None,
                vehicle_from_camera=vehicle_from_camera if self.pool_rigs else None,
                exclude=boxes,
                exclude_margin_m=self.config.object_margin_m,
            )
            if used and self.keep_views:
                entry.view = CalibrationView(
                    image, frame.points, motion, camera, vehicle_from_camera
                )
        self._statuses = tuple(
            status_of(name, entry.monitor.estimate())
            for name, entry in sorted(self._cameras.items())
        )
        blind = {name: _blind(entry.monitor) for name, entry in sorted(self._cameras.items())}
        self._notes = (
            drift_notes(self._statuses)
            + tuple(
                blind_note(name, why)
                for name, why in blind.items()
                if sum(why.values()) >= BLIND_AFTER_FRAMES
            )
            + tuple(
                # Frames used, but together no evidence: the verdict is held, not renewed.
                _not_checked(name, no_evidence_text(entry.monitor.estimate(), entry.monitor.config))
                for name, entry in sorted(self._cameras.items())
                if entry.monitor.unjudged and sum(blind[name].values()) < BLIND_AFTER_FRAMES
            )
        )

    def _travel(self, frame: StepFrame) -> float | None:
        """The odometer at the frame from the ego speed (None without an ego twist)."""
        if frame.twist is None:
            self._last_stamp_ns = None
            return None
        (vx, vy, _), _ = frame.twist
        if self._last_stamp_ns is not None:
            dt = max(frame.stamp_ns - self._last_stamp_ns, 0) * 1e-9
            self._odometer_m += math.hypot(vx, vy) * dt
        self._last_stamp_ns = frame.stamp_ns
        return self._odometer_m

    def statuses(self) -> tuple[CalibrationStatus, ...]:
        """Each watched camera's status (after the last `observe`)."""
        return self._statuses

    def notes(self) -> tuple[str, ...]:
        """Lines for the diagnostics' notes (after the last `observe`): each drifted camera
        (`drift_notes`) and each camera whose last `BLIND_AFTER_FRAMES` frames or more held no
        evidence (`blind_note`)."""
        return self._notes

    def monitors(self) -> dict[str, CalibrationMonitor]:
        """The monitor of each camera seen so far."""
        return {name: entry.monitor for name, entry in self._cameras.items()}

    def view_of(self, camera: str) -> CalibrationView | None:
        """The last frame a camera's monitor used (None before one, or without
        `keep_views`)."""
        entry = self._cameras.get(camera)
        return None if entry is None else entry.view

    def rig_of(self, camera: str) -> Rig | None:
        """The rig a camera's monitor watches (None for a camera not seen)."""
        entry = self._cameras.get(camera)
        return None if entry is None else entry.rig

    def earlier_of(self, camera: str) -> tuple[int, int]:
        """(rigs, frames) a camera's monitor was given before the rig it watches: a new rig
        starts it over (0, 0 for a camera not seen, or with `pool_rigs`)."""
        entry = self._cameras.get(camera)
        return (0, 0) if entry is None else (entry.earlier_rigs, entry.earlier_frames)


def _sigma(values: Sequence[float]) -> tuple[float, float, float]:
    out = [float(v) if math.isfinite(v) else -1.0 for v in values]
    return out[0], out[1], out[2]


def status_of(camera: str, estimate: CalibrationEstimate) -> CalibrationStatus:
    """The diagnostics message of one camera's estimate (-1: an axis not observed)."""
    c: Correction = estimate.correction
    return CalibrationStatus(
        camera=camera,
        state=estimate.state,
        rotation_deg=c.rotation_deg,
        translation_m=c.translation_m,
        rotation_sigma_deg=_sigma(estimate.sigma[:3]),
        translation_sigma_m=_sigma(estimate.sigma[3:]),
        frames=estimate.frames,
        skipped=estimate.skipped,
        score=float(estimate.score) if math.isfinite(estimate.score) else 0.0,
    )


def drift_notes(statuses: Sequence[CalibrationStatus]) -> tuple[str, ...]:
    """One line per drifted camera, for the diagnostics' notes."""
    return tuple(
        f"calibration: camera {s.camera} drifted; estimated correction rotation "
        f"{_fmt(s.rotation_deg, 2)} deg, translation {_fmt([v * 100 for v in s.translation_m], 1)} "
        "cm (vehicle axes)"
        for s in statuses
        if s.state == MonitorState.DRIFTED
    )


def _blind(monitor: CalibrationMonitor) -> dict[str, int]:
    """The frames without evidence since the monitor's last frame used, by why; a standing
    vehicle's frames are not counted (parked, nothing is wrong with the evidence)."""
    return {k: n for k, n in monitor.skipped_since_used.items() if k != SKIP_STILL}


def blind_note(camera: str, skipped_by: Mapping[str, int]) -> str:
    """The note of a camera whose monitor finds no evidence: how many frames in a row, why."""
    return _not_checked(
        camera,
        f"its last {sum(skipped_by.values())} frames held no evidence ({skip_text(skipped_by)})",
    )


def _not_checked(camera: str, why: str) -> str:
    """The diagnostics' note of a camera whose extrinsic is not being checked, and why."""
    return f"calibration: camera {camera} not checked: {why}"


def _fmt(values: Sequence[float], digits: int) -> str:
    return "(" + ", ".join(f"{v:+.{digits}f}" for v in values) + ")"
