"""GNSS position jumps: a fix farther from the last accepted one than a vehicle could have driven.

A receiver's outlier (multipath, a wrong RTK fix, a damaged message that still decodes) puts
one fix kilometres away. Filed, it moves that sweep's global positions and every ego pose
interpolated from it (the deskew's motion, the tracker's world frame). `FixGate` judges each
fix against the last one it accepted: farther than `MAX_SPEED_MPS` (the schema's bound on a
reported velocity) times the time between them, plus `slack_m` for the receiver's own jumps
(a float solution settling to RTK), is a jump. A jump alone is refused; `confirm` fixes in a
row that agree with each other and not with the old track are the vehicle's new position
(a receiver re-initialised, a drive resumed elsewhere) and are adopted, as a sensor clock jump
is (perception.sync.clock). The distance is on a sphere of the Earth's mean radius: a gate
needs metres, not millimetres.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from perception.msgs.schema import MAX_SPEED_MPS
from perception.msgs.types import GnssFix

__all__ = ["FixGate", "FixVerdict"]

_EARTH_RADIUS_M = 6_371_008.8


class FixVerdict(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    #: The fix confirms a jump: the fixes before it are of another track.
    ADOPTED = "adopted"


@dataclass(frozen=True)
class _Place:
    stamp_ns: int
    latitude_deg: float
    longitude_deg: float
    altitude_m: float

    @staticmethod
    def of(fix: GnssFix) -> _Place:
        return _Place(fix.header.stamp_ns, fix.latitude_deg, fix.longitude_deg, fix.altitude_m)


def distance_m(a: _Place, b: _Place) -> float:
    """Metres between two places (haversine on a sphere, and the height apart)."""
    lat_a, lat_b = math.radians(a.latitude_deg), math.radians(b.latitude_deg)
    dlat = lat_b - lat_a
    dlon = math.radians(math.remainder(b.longitude_deg - a.longitude_deg, 360.0))
    h = math.sin(dlat / 2) ** 2 + math.cos(lat_a) * math.cos(lat_b) * math.sin(dlon / 2) ** 2
    ground = 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
    return math.hypot(ground, b.altitude_m - a.altitude_m)


class FixGate:
    """Judges fixes one by one (`judge`); `last_jump_m` is how far from the track the last
    fix judged a jump was."""

    def __init__(self, *, confirm: int = 3, slack_m: float = 50.0) -> None:
        if confirm < 2:
            raise ValueError(f"confirm must be >= 2, got {confirm}")
        self.confirm = confirm
        self.slack_m = slack_m
        self._last: _Place | None = None
        self._candidates: list[_Place] = []
        self.last_jump_m = 0.0

    def _reachable(self, a: _Place, b: _Place) -> tuple[bool, float]:
        """Whether a vehicle could have driven from `a` to `b`, and the metres between."""
        metres = distance_m(a, b)
        seconds = abs(b.stamp_ns - a.stamp_ns) * 1e-9
        return metres <= MAX_SPEED_MPS * seconds + self.slack_m, metres

    def judge(self, fix: GnssFix) -> FixVerdict:
        place = _Place.of(fix)
        if self._last is None:
            self._last = place
            return FixVerdict.ACCEPTED
        on_track, metres = self._reachable(self._last, place)
        if on_track:
            # Fixes refused in between were outliers: the track goes on.
            self._last = place
            self._candidates.clear()
            return FixVerdict.ACCEPTED
        self.last_jump_m = metres
        candidates = self._candidates
        if candidates and not self._reachable(candidates[-1], place)[0]:
            candidates.clear()  # nor at the place the fixes before it jumped to
        candidates.append(place)
        if len(candidates) < self.confirm:
            return FixVerdict.REJECTED
        self._last = place
        candidates.clear()
        return FixVerdict.ADOPTED

    def reset(self) -> None:
        """Forget the track (the stream's clock jumped: its stamps are of another timeline)."""
        self._last = None
        self._candidates.clear()
