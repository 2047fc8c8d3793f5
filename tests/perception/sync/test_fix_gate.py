"""GNSS position jumps (perception.sync.fix_gate), alone and in the Bundler."""

from __future__ import annotations

import re

import numpy as np
import pytest

from calibration import PinholeCamera, Rig, RigidTransform
from calibration.geodesy import LocalTangentPlane
from perception.msgs.types import GnssFix, Header, LidarSweep
from perception.sync import Bundler, CollectorPolicy, Filed
from perception.sync.fix_gate import FixGate, FixVerdict

MS = 1_000_000
S = 1_000 * MS
ORIGIN = LocalTangentPlane(49.0, 8.4, 100.0)
A = FixVerdict.ACCEPTED
R = FixVerdict.REJECTED


def _fix(t_ms: int, east_m: float, north_m: float = 0.0, seq: int = 0) -> GnssFix:
    lat, lon, alt = ORIGIN.enu_to_geodetic([east_m, north_m, 0.0])
    header = Header("gnss", seq, t_ms * MS, "gnss")
    return GnssFix(header, float(lat), float(lon), float(alt), heading_rad=0.0)


def _drive(n: int, start_ms: int = 0, east_m: float = 0.0) -> list[GnssFix]:
    """n fixes at 10 Hz, 20 m/s east."""
    return [_fix(start_ms + 100 * k, east_m + 2.0 * k) for k in range(n)]


def test_a_drive_is_accepted_and_a_lone_outlier_refused() -> None:
    gate = FixGate()
    fixes = _drive(30)
    # One fix 4,500 km north in the middle: refused, the track goes on after it.
    fixes[12] = _fix(1200, 24.0, 4.5e6)
    verdicts = [gate.judge(f) for f in fixes]
    assert verdicts == [A] * 12 + [R] + [A] * 17
    assert 4e6 < gate.last_jump_m < 5e6  # (the tangent plane's 4,500 km north, on the Earth)


def test_a_new_place_confirmed_by_fixes_in_a_row_is_adopted() -> None:
    """A receiver re-initialised 50 km away: its first two fixes are refused, the third agrees
    with them and is adopted, and the track goes on from there."""
    gate = FixGate(confirm=3)
    verdicts = [gate.judge(f) for f in _drive(10)]
    verdicts += [gate.judge(f) for f in _drive(10, start_ms=1000, east_m=50_000.0)]
    assert verdicts == [A] * 10 + [R, R, FixVerdict.ADOPTED] + [A] * 7


def test_outliers_that_do_not_agree_are_never_adopted() -> None:
    gate = FixGate(confirm=2)
    assert [gate.judge(f) for f in _drive(5)] == [A] * 5
    scattered = [_fix(500 + 100 * k, 1e5 * (k + 1), (-1) ** k * 1e5) for k in range(6)]
    assert [gate.judge(f) for f in scattered] == [R] * 6
    assert gate.judge(_fix(1100, 22.0)) is A  # back on the track


@pytest.mark.parametrize(
    ("before", "after", "gap_s"),
    [
        # A minute's outage, 1.5 km driven meanwhile: a vehicle could have.
        ((0.0, 0.0), (1500.0, 0.0), 60.0),
        # Across the date line: 22 m, not 40,000 km.
        ((0.0, 0.0), (0.0, 0.0), 0.1),
    ],
)
def test_what_a_vehicle_could_have_driven_is_accepted(
    before: tuple[float, float], after: tuple[float, float], gap_s: float
) -> None:
    gate = FixGate()
    if before == after:
        first = GnssFix(Header("gnss", 0, 0, "gnss"), 10.0, 179.9999, 0.0)
        second = GnssFix(Header("gnss", 1, round(gap_s * S), "gnss"), 10.0, -179.9999, 0.0)
    else:
        first, second = _fix(0, *before), _fix(round(gap_s * 1000), *after)
    assert gate.judge(first) is A and gate.judge(second) is A


def test_the_gate_needs_two_fixes_to_confirm() -> None:
    with pytest.raises(ValueError, match="confirm must be >= 2"):
        FixGate(confirm=1)


def _bundler() -> Bundler:
    cam = PinholeCamera(np.diag([50.0, 50.0, 1.0]), (), 64, 48)
    rig = Rig(
        {"lidar": RigidTransform.identity(), "camera/front": RigidTransform.identity()},
        {"front": cam},
    )
    cameras = ("camera/front",)
    policy = CollectorPolicy(cameras, window_ns=50 * MS, timeout_ns=10 * MS, queue_size=20)
    return Bundler(cameras, policy, gnss_window_ns=500 * MS, queue_size=20, default_rig=rig)


def test_the_bundler_refuses_a_jump_and_forgets_the_old_track_once_one_is_confirmed() -> None:
    """Before, a fix 4,500 km off was filed: it moved that sweep's ego poses and global
    positions. Refused now as a bad fix, naming how far it was; a confirmed new place drops
    the old track's fixes and poses, counted."""
    s = _bundler()
    for f in _drive(10):
        assert s.add(f, receive_ns=f.header.stamp_ns).filed is Filed.ACCEPTED
    outlier = _fix(1000, 20.0, 4.5e6, seq=10)
    result = s.add(outlier, receive_ns=outlier.header.stamp_ns)
    assert result.filed is Filed.BAD_FIX
    assert re.match(r"gnss: fix 10 is 4\d{6} m from the last fix accepted, farther", result.reason)
    sweep = LidarSweep(Header("lidar/top", 0, 1000 * MS, "lidar"), np.zeros((3, 4), np.float32))
    s.add(sweep, receive_ns=1000 * MS)
    (bundle,) = s.poll(1100 * MS)
    assert bundle.gnss is not None and bundle.gnss.header.stamp_ns == 900 * MS  # not the outlier
    assert bundle.ego_pose is not None
    assert abs(bundle.ego_pose.position_enu_m[1]) < 1.0  # north: on the road, not 4,500 km
    for f in _drive(5, start_ms=1100, east_m=50_000.0):
        s.add(f, receive_ns=f.header.stamp_ns)
    assert s.stats.bad_fixes == 3 and s.stats.position_jumps == 1
    assert s.stats.dropped_fixes_position_jump == 10
