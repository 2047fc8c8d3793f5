"""The rich synthetic world: what a learned detector must learn to tell apart.

`make_rich_world` builds, from one random generator, a curved road with crossroads
(`replay.synth.road`) and on it:
- road users: cars, vans and trucks in both lanes, parked (heading jittered) and queued on the
  side roads of a junction; cyclists in the bike lanes; pedestrians walking or standing on the
  pavements and crossing the road (at junctions and between them, timed so that nobody walks
  into the ego vehicle or a moving vehicle);
- scenery, static and not in the ground truth, much of it car-sized to a naive clusterer:
  building fronts, hedges, walls, guard rails, parked trailers, lamp posts with signs, trees;
- a randomised camera look (sun, sky, ground colours and texture, exposure, white balance,
  blur, noise): domain randomisation by seed.

Every part names a material (`replay.synth.lidar_model.MATERIALS`) for the lidar's intensity and
glass transmission. Labels follow KITTI: `Car`, `Van`, `Truck`, `Pedestrian`, `Cyclist`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from replay.synth.road import Road
from replay.synth.world import (
    EGO_SPEED_MPS,
    Appearance,
    SynthObject,
    SynthWorld,
    ego_road_coordinates,
)

__all__ = ["ROAD_USER_LABELS", "make_rich_world"]

#: The labels of the rich world's road users (its ground truth).
ROAD_USER_LABELS = ("Car", "Van", "Truck", "Pedestrian", "Cyclist")

Part = tuple[Any, ...]
Made = tuple[tuple[float, float, float], tuple[Part, ...], float]

# Lateral offsets (m) of the lanes in the road coordinates (`Road`): driving lanes, parking,
# bike lanes, pavements; scenery starts beyond the paved verge (11 m).
_LANE_M = 3.5
_PARKING_M = 7.3
_BIKE_M = 5.3
# Pavement: one walking stream each way and the people standing between them.
_WALK_NEAR_M = 9.0
_WALK_FAR_M = 10.55
_STAND_M = 9.775
_POLE_M = 11.0
_SIDE_ROAD_HALF_M = 3.5
_JUNCTION_CLEAR_M = 9.0
_SEGMENT_M = 5.0


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    palette = ((40, 40, 200), (200, 200, 200), (30, 30, 30), (160, 90, 20), (40, 150, 40),
               (220, 220, 225), (20, 110, 200), (90, 90, 110), (0, 190, 230), (120, 30, 30),
               (60, 60, 60), (180, 170, 150))  # fmt: skip
    base = np.array(palette[int(rng.integers(len(palette)))], float)
    return tuple(int(v) for v in np.clip(base * rng.uniform(0.8, 1.2, 3), 0, 255))  # type: ignore[return-value]


def _wheels(length: float, width: float, radius: float) -> tuple[Part, ...]:
    dx = 0.34 * length
    black = (25, 25, 25)
    return tuple(
        (sx * dx, sy * (width / 2 - 0.12), radius, 2 * radius, 0.22, 2 * radius, black, "rubber")
        for sx in (-1, 1)
        for sy in (-1, 1)
    )


def _car(rng: np.random.Generator) -> Made:
    length = 3.9 * rng.uniform(0.9, 1.15)
    width, height = 1.6 * rng.uniform(0.95, 1.1), 1.5 * rng.uniform(0.94, 1.08)
    colour = _colour(rng)
    body_z, body_h = 0.3, height * 0.5 - 0.3
    cabin_h = height - body_z - body_h
    glass = (70, 55, 45)
    parts = (
        (0.0, 0.0, body_z + body_h / 2, length, width, body_h, colour, "car_paint"),
        (-0.1 * length, 0.0, body_z + body_h + cabin_h / 2 - 0.03, 0.55 * length, 0.9 * width,
         cabin_h - 0.06, glass, "glass"),
        (-0.1 * length, 0.0, height - 0.03, 0.5 * length, 0.86 * width, 0.06, colour,
         "car_paint"),
        *_wheels(length, width, 0.32),
    )  # fmt: skip
    return (length, width, height), parts, 0.6


def _van(rng: np.random.Generator) -> Made:
    length, width = rng.uniform(4.6, 5.4), rng.uniform(1.9, 2.05)
    height = rng.uniform(1.95, 2.4)
    colour = _colour(rng)
    parts = (
        (-0.1, 0.0, 0.3 + (height - 0.3) / 2, length - 0.2, width, height - 0.3, colour,
         "car_paint"),
        (length / 2 - 0.25, 0.0, 0.3 + (height - 0.3) * 0.7, 0.3, 0.9 * width, 0.4 * height,
         (70, 55, 45), "glass"),
        *_wheels(length, width, 0.33),
    )  # fmt: skip
    return (length, width, height), parts, 0.6


def _truck(rng: np.random.Generator) -> Made:
    box_l, cab_l = rng.uniform(4.5, 7.5), 2.1
    length, width = box_l + cab_l + 0.2, rng.uniform(2.4, 2.55)
    height = rng.uniform(3.0, 3.7)
    colour = _colour(rng)
    cargo = (int(rng.integers(150, 240)),) * 3
    parts = (
        (length / 2 - cab_l / 2, 0.0, 0.45 + 1.25, cab_l, width, 2.5, colour, "car_paint"),
        (-length / 2 + box_l / 2, 0.0, 0.5 + (height - 0.5) / 2, box_l, width, height - 0.5,
         cargo, "metal"),
        *_wheels(length, width, 0.45),
    )  # fmt: skip
    return (length, width, height), parts, 0.5


def _pedestrian(rng: np.random.Generator) -> Made:
    height = rng.uniform(1.5, 1.92)
    length, width = 0.8 * rng.uniform(0.8, 1.0), 0.6 * rng.uniform(0.85, 1.05)
    shirt = tuple(int(v) for v in rng.integers(20, 235, 3))
    trousers = tuple(int(v) for v in rng.integers(20, 140, 3))
    head = 0.25
    legs = (height - head) * 0.45
    parts = (
        (0.0, 0.0, legs / 2, 0.35, 0.42, legs, trousers, "fabric"),
        (0.0, 0.0, legs + (height - head - legs) / 2, 0.38, 0.52, height - head - legs, shirt,
         "fabric"),
        (0.0, 0.0, height - head / 2, 0.22, 0.2, head, (120, 160, 210), "skin"),
    )  # fmt: skip
    return (length, width, height), parts, 0.4


def _cyclist(rng: np.random.Generator) -> Made:
    height = rng.uniform(1.6, 1.85)
    length, width = 1.76 * rng.uniform(0.95, 1.05), 0.6
    jacket = tuple(int(v) for v in rng.integers(20, 235, 3))
    wheel = 0.7
    parts = (
        (0.0, 0.0, wheel / 2, length, 0.1, wheel, (30, 30, 30), "metal"),
        (-0.1, 0.0, wheel + (height - wheel - 0.25) / 2, 0.55, 0.5, height - wheel - 0.25,
         jacket, "fabric"),
        (0.0, 0.0, height - 0.125, 0.24, 0.22, 0.25, (120, 160, 210), "skin"),
    )  # fmt: skip
    return (length, width, height), parts, 0.5


_MAKERS = {"Car": _car, "Van": _van, "Truck": _truck, "Pedestrian": _pedestrian,
           "Cyclist": _cyclist}  # fmt: skip


def _vehicle_kind(rng: np.random.Generator) -> str:
    return str(rng.choice(("Car", "Van", "Truck"), p=(0.74, 0.16, 0.10)))


class _Builder:
    """Collects road users and scenery with consecutive idents (scenery after road users)."""

    def __init__(self, rng: np.random.Generator, road: Road) -> None:
        self.rng, self.road = rng, road
        self.users: list[SynthObject] = []
        self.scenery: list[tuple[str, tuple[float, float, float], tuple[float, float, float],
                                 tuple[Part, ...]]] = []  # fmt: skip

    def user(self, kind: str, s: float, d: float, yaw: float, speed: float) -> SynthObject:
        size, parts, refl = _MAKERS[kind](self.rng)
        obj = SynthObject(len(self.users), kind, size, s, d, yaw, speed, parts, refl, self.road)
        self.users.append(obj)
        return obj

    def static(
        self,
        label: str,
        size: tuple[float, float, float],
        where: tuple[float, float, float],
        parts: tuple[Part, ...],
    ) -> None:
        """Scenery at road coordinates `where` = (s, d, heading relative to the road)."""
        self.scenery.append((label, size, where, parts))

    def world(self, seconds: float, appearance: Appearance, lidar: str) -> SynthWorld:
        base = len(self.users)
        # Every scenery part names its material; the reflectivity is only the fallback.
        scenery = tuple(
            SynthObject(base + i, label, size, s, d, yaw, 0.0, parts, 0.3, self.road)
            for i, (label, size, (s, d, yaw), parts) in enumerate(self.scenery)
        )
        return SynthWorld(tuple(self.users), float(seconds), self.road, scenery, appearance,
                          lidar)  # fmt: skip


def _near_junction(road: Road, s: float, clear: float = _JUNCTION_CLEAR_M) -> bool:
    return any(abs(s - js) < clear for js in road.junctions)


def _stream_span(
    lo: float, hi: float, yaw: float, speed: float, seconds: float
) -> tuple[float, float]:
    """Where a stream moving along the road (relative heading 0 or pi) starts and ends so that
    the stretch [lo, hi] stays populated for the whole drive."""
    along = math.cos(yaw) * speed
    return (lo - along * seconds, hi) if along > 0 else (lo, hi - along * seconds)


def _traffic(b: _Builder, lo: float, hi: float, seconds: float) -> None:
    rng = b.rng
    # (lateral offset, relative heading, speed range) of the two driving lanes.
    for d, yaw, speeds in ((-_LANE_M, 0.0, (6.5, 10.0)), (_LANE_M, math.pi, (5.0, 9.0))):
        speed = float(rng.uniform(*speeds))
        s_lo, s_hi = _stream_span(lo, hi, yaw, speed, seconds)
        s = s_lo + float(rng.uniform(0.0, 25.0))
        while s < s_hi:
            obj = b.user(_vehicle_kind(rng), s, d + float(rng.normal(0.0, 0.12)), yaw, speed)
            s += obj.size[0] + float(rng.uniform(7.0, 30.0))
    for sign in (-1.0, 1.0):
        s = lo + float(rng.uniform(0.0, 8.0))
        while s < hi:
            if _near_junction(b.road, s) or rng.random() < 0.35:
                s += float(rng.uniform(4.0, 9.0))
                continue
            if rng.random() < 0.12:
                s += _trailer(b, s, sign * _PARKING_M) + float(rng.uniform(1.0, 3.0))
                continue
            yaw = (0.0 if sign < 0 else math.pi) + float(rng.normal(0.0, 0.05))
            kind = "Van" if rng.random() < 0.18 else "Car"  # trucks do not fit the parking lane
            obj = b.user(kind, s, sign * _PARKING_M + float(rng.normal(0, 0.1)), yaw, 0.0)
            s += obj.size[0] + float(rng.uniform(1.0, 4.0))
    # Queues on the junctions' side roads, facing the main road.
    for js in b.road.junctions:
        for sign in (-1.0, 1.0):
            d = sign * (b.road.verge_m + 3.0)
            for _ in range(int(rng.integers(0, 3))):
                obj = b.user(_vehicle_kind(rng), js - sign * 1.8, d, -sign * math.pi / 2, 0.0)
                d += sign * (obj.size[0] + float(rng.uniform(1.5, 3.0)))
    b.user("Car", float(rng.uniform(14.0, 22.0)), 0.0, 0.0, EGO_SPEED_MPS)


def _vulnerable(b: _Builder, lo: float, hi: float, seconds: float) -> None:
    """Cyclists and pedestrians. Each stream (a bike lane, one walking direction on a pavement)
    keeps one speed, so nobody walks or rides through anybody else; people standing wait at
    the junctions' corners, between the two walking streams."""
    rng = b.rng
    for sign in (-1.0, 1.0):
        yaw = 0.0 if sign < 0 else math.pi
        speed = float(rng.uniform(3.0, 6.5))
        s_lo, s_hi = _stream_span(lo, hi, yaw, speed, seconds)
        s = s_lo + float(rng.uniform(0.0, 20.0))
        while s < s_hi:
            b.user("Cyclist", s, sign * _BIKE_M + float(rng.normal(0, 0.1)), yaw, speed)
            s += float(rng.uniform(12.0, 40.0))
        for offset, heading in ((_WALK_NEAR_M, yaw), (_WALK_FAR_M, math.pi - yaw)):
            speed = float(rng.uniform(0.9, 1.6))
            s_lo, s_hi = _stream_span(lo, hi, heading, speed, seconds)
            s = s_lo + float(rng.uniform(0.0, 8.0))
            while s < s_hi:
                b.user("Pedestrian", s, sign * offset, heading, speed)
                s += float(rng.uniform(3.0, 16.0))
        for js in b.road.junctions:
            for corner in (-1.0, 1.0):
                if rng.random() < 0.5:
                    s = js + corner * float(rng.uniform(_SIDE_ROAD_HALF_M + 0.8, 6.0))
                    facing = float(rng.choice((0.0, math.pi))) + float(rng.uniform(-0.15, 0.15))
                    b.user("Pedestrian", s, sign * _STAND_M, facing, 0.0)
    _crossings(b, lo, hi, seconds)


def _crossings(b: _Builder, lo: float, hi: float, seconds: float) -> None:
    """Pedestrians crossing at the junctions and between them, each kept clear of the ego
    vehicle and of every other road user, moving or parked, for the whole drive."""
    rng = b.rng
    times = np.arange(0.0, seconds + 1e-9, 0.1)
    junctions = [js - float(rng.uniform(5.0, 8.0)) for js in b.road.junctions]
    for place in [*junctions, *([None] * int(rng.integers(1, 4)))]:
        for _attempt in range(40):
            sign = float(rng.choice((-1.0, 1.0)))
            speed = float(rng.uniform(1.0, 1.6))
            if place is None:
                # Between junctions people cross between the parked cars: the walk stays on the
                # carriageway's driving and bike lanes.
                s = float(rng.uniform(lo + 20.0, hi))
                span = min(12.0, speed * seconds)
                d0 = -sign * 6.0 + sign * float(rng.uniform(0.0, 12.0 - span))
            else:
                s = place
                d0 = -sign * 10.8 + sign * float(rng.uniform(0.0, 10.0))
            pd = d0 + sign * speed * times
            if _clear(s, pd, times, b.users):
                b.user("Pedestrian", s, d0, sign * math.pi / 2, speed)
                break


def _clear(s: float, pd: np.ndarray, times: np.ndarray, others: list[SynthObject]) -> bool:
    """Whether a pedestrian crossing at arc length `s`, lateral offsets `pd` at `times`, keeps
    clear of the ego vehicle and `others` (road coordinates; a margin around each box)."""
    ego_s = ego_road_coordinates(times)[0]
    if np.any((np.abs(ego_s - s) < 10.0) & (np.abs(pd) < 3.0)):
        return False
    for o in others:
        os_, od = o.track(times)
        reach = max(o.size[0], o.size[1]) / 2
        if np.any((np.abs(os_ - s) < reach + 1.2) & (np.abs(pd - od) < reach + 1.0)):
            return False
    return True


def _trailer(b: _Builder, s: float, d: float) -> float:
    rng = b.rng
    length, width, height = rng.uniform(3.0, 6.0), rng.uniform(1.8, 2.3), rng.uniform(1.2, 2.6)
    grey = (int(rng.integers(90, 220)),) * 3
    parts = (
        (0.0, 0.0, 0.45 + (height - 0.45) / 2, length, width, height - 0.45, grey, "metal"),
        (0.3 * length, 0.0, 0.3, 0.5, width - 0.3, 0.6, (30, 30, 30), "rubber"),
        (length / 2 + 0.6, 0.0, 0.45, 1.2, 0.12, 0.1, (40, 40, 40), "metal"),
    )
    yaw = float(rng.normal(0.0, 0.08)) + (0.0 if d < 0 else math.pi)
    b.static("trailer", (length, width, height), (s + length / 2, d, yaw), parts)
    return float(length)


def _scenery(b: _Builder, lo: float, hi: float) -> None:
    rng, road = b.rng, b.road
    for sign in (-1.0, 1.0):
        s = lo
        while s < hi:
            stretch = float(rng.uniform(10.0, 35.0))
            kind = str(rng.choice(("building", "hedge", "wall", "rail", "open"),
                                  p=(0.35, 0.2, 0.15, 0.15, 0.15)))  # fmt: skip
            _frontage(b, kind, sign, s, min(s + stretch, hi))
            s += stretch + float(rng.uniform(0.0, 6.0))
        s = lo + float(rng.uniform(0.0, 15.0))
        while s < hi:
            if not _near_junction(road, s, 6.0):
                d = sign * float(rng.uniform(12.0, 15.0))
                trunk, crown = float(rng.uniform(2.2, 3.2)), float(rng.uniform(2.0, 4.5))
                green = (int(rng.integers(20, 70)), int(rng.integers(90, 160)),
                         int(rng.integers(30, 90)))  # fmt: skip
                parts = (
                    (0.0, 0.0, trunk / 2, 0.3, 0.3, trunk, (40, 60, 90), "bark"),
                    (0.0, 0.0, trunk + crown / 2, crown, crown, crown, green, "vegetation"),
                )
                b.static("tree", (crown, crown, trunk + crown), (s, d, 0.0), parts)
            s += float(rng.uniform(8.0, 25.0))
        s = lo + float(rng.uniform(0.0, 20.0))
        while s < hi:
            if not _near_junction(road, s, 4.0):
                pole_h = float(rng.uniform(4.0, 8.0))
                parts_l: list[Part] = [
                    (0.0, 0.0, pole_h / 2, 0.16, 0.16, pole_h, (120, 120, 125), "metal")
                ]
                if rng.random() < 0.4:
                    parts_l.append((0.0, sign * 0.1, 2.4, 0.05, 0.6, 0.6, (200, 200, 230),
                                    "retroreflector"))  # fmt: skip
                b.static("pole", (0.6, 0.6, pole_h), (s, sign * _POLE_M, 0.0), tuple(parts_l))
            s += float(rng.uniform(20.0, 40.0))


def _frontage(b: _Builder, kind: str, sign: float, s0: float, s1: float) -> None:
    """One stretch of road frontage, cut into pieces of at most `_SEGMENT_M` (pieces keep the
    camera's painter's algorithm and the lidar's column windows local)."""
    rng, road = b.rng, b.road
    if kind == "open":
        return
    if kind == "building":
        depth, height = float(rng.uniform(6.0, 12.0)), float(rng.uniform(5.0, 16.0))
        d = sign * (float(rng.uniform(13.5, 19.0)) + depth / 2)
        colour = tuple(int(v) for v in rng.integers(60, 210, 3))
        material = str(rng.choice(("brick", "concrete")))
        dims = (depth, height, 0.0, colour, material)
    elif kind == "hedge":
        width, height = float(rng.uniform(0.8, 1.5)), float(rng.uniform(0.9, 1.9))
        d = sign * (float(rng.uniform(11.3, 12.5)) + width / 2)
        colour = (int(rng.integers(20, 60)), int(rng.integers(80, 140)), int(rng.integers(30, 80)))
        dims = (width, height, 0.0, colour, "vegetation")
    elif kind == "wall":
        height = float(rng.uniform(0.7, 2.3))
        d = sign * float(rng.uniform(11.4, 12.5))
        colour = tuple(int(v) for v in rng.integers(90, 200, 3))
        dims = (0.3, height, 0.0, colour, str(rng.choice(("brick", "concrete"))))
    else:  # guard rail: a metal band on posts, 0.45-0.8 m above the ground
        d = sign * 11.2
        dims = (0.12, 0.33, 0.45, (170, 170, 175), "metal")
    width, height, lift, colour, material = dims
    s = s0
    while s < s1 - 0.5:
        piece = min(_SEGMENT_M, s1 - s)
        centre = s + piece / 2
        if not _near_junction(road, centre, _JUNCTION_CLEAR_M + piece / 2):
            parts = ((0.0, 0.0, lift + height / 2, piece, width, height, colour, material),)
            b.static(kind, (piece, width, lift + height), (centre, d, 0.0), parts)
        s += piece


def _appearance(rng: np.random.Generator) -> Appearance:
    elevation = math.radians(float(rng.uniform(12.0, 70.0)))
    azimuth = float(rng.uniform(-math.pi, math.pi))
    light = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
             math.sin(elevation))  # fmt: skip
    overcast = rng.random() < 0.3
    if overcast:
        grey = float(rng.uniform(150.0, 215.0))
        top = (grey, grey, grey * 0.97)
        horizon = (grey + 20.0, grey + 20.0, grey + 15.0)
    else:
        top = (float(rng.uniform(150, 210)), float(rng.uniform(110, 160)),
               float(rng.uniform(60, 120)))  # fmt: skip
        horizon = (float(rng.uniform(210, 245)), float(rng.uniform(190, 225)),
                   float(rng.uniform(150, 200)))  # fmt: skip
    grass = (float(rng.uniform(40, 90)), float(rng.uniform(90, 140)), float(rng.uniform(60, 120)))
    tone = float(rng.uniform(60.0, 115.0))
    asphalt = (tone, tone, tone * float(rng.uniform(0.98, 1.06)))
    pave = float(rng.uniform(125.0, 175.0))
    return Appearance(
        light=light,
        ambient=float(rng.uniform(0.5, 0.7)) if overcast else float(rng.uniform(0.3, 0.5)),
        sky_top=top,
        sky_horizon=horizon,
        grass=grass,
        asphalt=asphalt,
        pavement=(pave, pave, pave * 0.97),
        gain=float(rng.uniform(0.65, 1.3)),
        white_balance=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)),  # type: ignore[arg-type]
        noise=float(rng.uniform(0.5, 4.0)),
        blur=float(rng.uniform(0.3, 0.9)) if rng.random() < 0.3 else 0.0,
        texture=float(rng.uniform(0.08, 0.25)),
        salt=int(rng.integers(1, 1 << 30)),
    )


def make_rich_world(rng: np.random.Generator, seconds: float, *, lidar: str) -> SynthWorld:
    """The rich world of a drive of `seconds` along its road (from 40 m behind the start to
    120 m past where the ego ends), seen by the lidar model `lidar`."""
    hi = EGO_SPEED_MPS * seconds + 120.0
    lo = -40.0
    road = Road.curved(rng, hi, junctions=int(rng.choice(3, p=(0.25, 0.5, 0.25))))
    b = _Builder(rng, road)
    _traffic(b, lo, hi, seconds)
    _vulnerable(b, lo, hi, seconds)
    _scenery(b, lo, hi)
    return b.world(seconds, _appearance(rng), lidar)
