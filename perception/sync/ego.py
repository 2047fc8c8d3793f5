"""Ego pose at any time from a bounded buffer of GNSS fixes.

Between two fixes the pose is interpolated (position linearly, heading along the shorter arc).
Beyond the newest (or before the oldest) fix it is extrapolated at constant velocity and yaw
rate (from the two nearest fixes) for at most `max_extrapolation_ns`, and flagged; further out
there is no pose. A pose whose nearest fix is more than `stale_after_ns` away (a GNSS gap or
outage) is flagged stale. Positions are local ENU metres around `origin` (the first fix when
None), headings ENU yaw in radians. A fix without a velocity gets one from its position and a
neighbour's at least `MIN_VELOCITY_BASELINE_NS` away, held to the schema's `MAX_SPEED_MPS`.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration import RigidTransform
from calibration.geodesy import LocalTangentPlane
from perception.msgs.schema import MAX_SPEED_MPS
from perception.msgs.types import EgoPose, GnssFix

__all__ = ["MIN_VELOCITY_BASELINE_NS", "EgoPose", "EgoPoseBuffer", "world_from_vehicle"]

# Fixes whose headings give the yaw rate for extrapolation (0.4 s at 10 Hz).
_RATE_FIXES = 5
#: The least time between the two fixes whose positions give a fix's velocity when it reports
#: none: over less, the positions' noise is the velocity (a centimetre over 1 ns is 10^7 m/s,
#: which deskew took for the ego motion and moved every point of the sweep out of range).
#: GNSS receivers report at up to 100 Hz, so consecutive fixes of one span it.
MIN_VELOCITY_BASELINE_NS = 10_000_000


@dataclass(frozen=True)
class _Sample:
    stamp_ns: int
    position: tuple[float, float, float]
    heading: float | None
    velocity: tuple[float, float, float] | None


def world_from_vehicle(
    pose: EgoPose, lever_arm_m: npt.NDArray[np.float64] | None
) -> RigidTransform:
    """The vehicle frame in the poses' ENU frame. The pose is the GNSS antenna's: the vehicle
    origin is the lever arm (`Rig.gnss_lever_arm_m`, vehicle frame; None: none) away."""
    heading = RigidTransform.from_yaw(pose.heading_rad)
    antenna = np.asarray(pose.position_enu_m, dtype=np.float64)
    origin = antenna if lever_arm_m is None else antenna - heading.rotation @ lever_arm_m
    return RigidTransform.from_yaw(pose.heading_rad, origin)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


class EgoPoseBuffer:
    """Keeps the last `capacity` fixes (stamp order) and answers `pose_at(stamp_ns)`.

    Raises ValueError for a capacity < 2 or a negative bound.
    """

    def __init__(
        self,
        origin: LocalTangentPlane | None = None,
        *,
        capacity: int = 200,
        max_extrapolation_ns: int = 200_000_000,
        stale_after_ns: int = 500_000_000,
    ) -> None:
        if capacity < 2 or max_extrapolation_ns < 0 or stale_after_ns < 0:
            raise ValueError("capacity must be >= 2 and the bounds >= 0")
        self.origin = origin
        self.max_extrapolation_ns = max_extrapolation_ns
        self.stale_after_ns = stale_after_ns
        self.capacity = capacity
        self._samples: deque[_Sample] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, fix: GnssFix) -> None:
        """File a fix (any order; a fix with an already known stamp replaces it)."""
        if self.origin is None:
            self.origin = LocalTangentPlane(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
        e, n, u = (float(v) for v in self.origin.geodetic_to_enu(
            fix.latitude_deg, fix.longitude_deg, fix.altitude_m
        ))  # fmt: skip
        sample = _Sample(fix.header.stamp_ns, (e, n, u), fix.heading_rad, fix.velocity_enu_mps)
        items = list(self._samples)
        i = bisect.bisect_left(items, sample.stamp_ns, key=lambda s: s.stamp_ns)
        if i < len(items) and items[i].stamp_ns == sample.stamp_ns:
            items[i] = sample
        else:
            items.insert(i, sample)
        # The oldest fixes go first when full: poses are wanted near now.
        self._samples = deque(items[-self.capacity :], maxlen=self.capacity)

    def _velocity(self, i: int) -> tuple[float, float, float]:
        """Velocity of sample i: its own if reported, else a finite difference."""
        s = self._samples
        own = s[i].velocity
        if own is not None:
            return own
        if len(s) < 2:
            return (0.0, 0.0, 0.0)
        a, b = self._baseline(i)
        dt = (b.stamp_ns - a.stamp_ns) * 1e-9
        v = [(pb - pa) / dt for pa, pb in zip(a.position, b.position, strict=True)]
        speed = math.hypot(*v)
        if speed > MAX_SPEED_MPS:
            # Positions that jumped (an outlier, a wrong fix): held to the bound the schema
            # holds a received velocity to, so deskew moves a sweep no further than that.
            v = [x * (MAX_SPEED_MPS / speed) for x in v]
        return (v[0], v[1], v[2])

    def _baseline(self, i: int) -> tuple[_Sample, _Sample]:
        """The fixes whose positions give sample i's velocity: it and the nearest earlier fix
        `MIN_VELOCITY_BASELINE_NS` or more before it, else the nearest later one as far after
        it, else (all within that of it) the oldest and the newest."""
        s = self._samples
        stamp_ns = s[i].stamp_ns
        for j in range(i - 1, -1, -1):
            if stamp_ns - s[j].stamp_ns >= MIN_VELOCITY_BASELINE_NS:
                return s[j], s[i]
        for j in range(i + 1, len(s)):
            if s[j].stamp_ns - stamp_ns >= MIN_VELOCITY_BASELINE_NS:
                return s[i], s[j]
        return s[0], s[-1]

    def _heading(self, i: int) -> float:
        h = self._samples[i].heading
        if h is not None:
            return h
        vx, vy, _ = self._velocity(i)
        return math.atan2(vy, vx)

    def pose_at(self, stamp_ns: int) -> EgoPose | None:
        """The pose at `stamp_ns`, or None when no fix is within the extrapolation bound."""
        s = self._samples
        if not s:
            return None
        stamps = [x.stamp_ns for x in s]
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(s) and stamps[i] == stamp_ns:
            j = i
            return self._at_sample(j, stamp_ns, extrapolated=False, gap_ns=0)
        if 0 < i < len(s):
            a, b = s[i - 1], s[i]
            w = (stamp_ns - a.stamp_ns) / (b.stamp_ns - a.stamp_ns)
            pos = tuple(pa + w * (pb - pa) for pa, pb in zip(a.position, b.position, strict=True))
            ha, hb = self._heading(i - 1), self._heading(i)
            heading = _wrap(ha + w * _wrap(hb - ha))
            va, vb = self._velocity(i - 1), self._velocity(i)
            vel = tuple(x + w * (y - x) for x, y in zip(va, vb, strict=True))
            gap = min(stamp_ns - a.stamp_ns, b.stamp_ns - stamp_ns)
            return EgoPose(
                stamp_ns,
                pos,  # type: ignore[arg-type]
                heading,
                vel,  # type: ignore[arg-type]
                extrapolated=False,
                stale=gap > self.stale_after_ns,
            )
        j = 0 if i == 0 else len(s) - 1
        gap = abs(stamp_ns - stamps[j])
        if gap > self.max_extrapolation_ns:
            return None
        return self._at_sample(j, stamp_ns, extrapolated=True, gap_ns=gap)

    def _yaw_rate(self, j: int) -> float:
        """rad/s: the least-squares slope of the headings of up to `_RATE_FIXES` fixes next to
        fix `j` (a slope of two noisy headings 100 ms apart would be noisier than a car's
        typical yaw rate: 2 mrad of heading noise is 28 mrad/s)."""
        s = self._samples
        if j > 0:
            near = range(max(0, j - _RATE_FIXES + 1), j + 1)
        else:
            near = range(min(len(s), _RATE_FIXES))
        t = [(s[i].stamp_ns - s[j].stamp_ns) * 1e-9 for i in near]
        h = [_wrap(self._heading(i) - self._heading(j)) for i in near]
        t_mean, h_mean = sum(t) / len(t), sum(h) / len(h)
        spread = sum((x - t_mean) ** 2 for x in t)
        if spread == 0:
            return 0.0
        return sum((x - t_mean) * (y - h_mean) for x, y in zip(t, h, strict=True)) / spread

    def _at_sample(self, j: int, stamp_ns: int, *, extrapolated: bool, gap_ns: int) -> EgoPose:
        sample = self._samples[j]
        vel = self._velocity(j)
        dt = (stamp_ns - sample.stamp_ns) * 1e-9
        pos = tuple(p + v * dt for p, v in zip(sample.position, vel, strict=True))
        heading = self._heading(j)
        if extrapolated and len(self._samples) > 1:
            # The end of a sweep usually lies past the newest fix: holding the heading there
            # would hide the ego's turn from deskew.
            heading = _wrap(heading + self._yaw_rate(j) * dt)
        return EgoPose(
            stamp_ns,
            pos,  # type: ignore[arg-type]
            heading,
            vel,
            extrapolated=extrapolated,
            stale=gap_ns > self.stale_after_ns,
        )
