"""Hostile but valid messages: what a sender within the rules can still send.

Each `*_message` function takes a valid seed message and returns one with hostile values, for
the real encoder to encode: empty, single point, far, huge, degenerate, dense or maximal sweeps,
odd time offsets; tiny, thin, large, blank or encoded (JPEG/PNG, valid and not) images; fixes at
the poles, the date line, the altitude bounds, with huge covariance, speed or heading; rigs with
extreme or broken intrinsics, extrinsics, lever arms, offsets and camera sets; headers at stamp
0 or far away, with long or odd stream names.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from perception.msgs.schema import INT64_MAX
from perception.msgs.types import CameraFrame, GnssFix, LidarSweep, Message, RigMessage
from tests.fuzz.sources import Source, choice, weighted
from tests.fuzz.wire_mutations import doc_paths, hostile_value, odd_string, parent_of, short

__all__ = ["camera_message", "fix_message", "header_message", "rig_message", "sweep_message"]

PERIOD_NS = 100_000_000


def _points(src: Source, points: npt.NDArray[np.float32], max_points: int) -> tuple[Any, str]:
    n = len(points)
    rng = np.random.default_rng(src.integer(0, 2**32 - 1))
    kind = weighted(
        src,
        (
            (3, "empty"),
            (3, "one"),
            (2, "few"),
            (2, "origin"),
            (2, "same"),
            (2, "far"),
            (2, "extreme"),
            (2, "tiny"),
            (2, "intensity"),
            (1, "dense"),
            (1, "max"),
            (2, "scaled"),
            (2, "shuffled"),
        ),
    )
    if kind == "empty":
        out = points[:0]
    elif kind == "one":
        out = points[:1]
    elif kind == "few":
        out = points[: src.integer(2, 20)]
    elif kind == "origin":
        out = np.zeros((n, 4), np.float32)
    elif kind == "same":
        out = np.repeat(points[:1], n, axis=0)
    elif kind == "far":
        out = points * np.float32(choice(src, (1e3, 1e6, -1e4)))
    elif kind == "extreme":
        out = rng.choice(np.array([3.4e38, -3.4e38, 0.0], np.float32), size=(n, 4))
    elif kind == "tiny":
        out = (points * np.float32(1e-40)).astype(np.float32)
    elif kind == "intensity":
        out = points.copy()
        out[:, 3] = choice(src, (-1.0, 1e30, -3.4e38, 255.0))
    elif kind == "dense":
        out = np.repeat(points[:64], max(1, min(max_points, 200_000) // 64), axis=0)
    elif kind == "max":
        out = rng.uniform(-80, 80, size=(max_points, 4)).astype(np.float32)
    elif kind == "scaled":
        out = points.copy()
        out[:, :3] *= np.float32(choice(src, (0.0, 0.01, 10.0)))
    else:
        out = rng.permutation(points)
    return np.ascontiguousarray(out, dtype=np.float32), f"points {kind} ({len(out)})"


def sweep_message(src: Source, msg: LidarSweep, max_points: int) -> tuple[Message, str]:
    points, what = _points(src, msg.points, max_points)
    offsets = None
    if src.chance(0.5):
        n = len(points)
        kind = choice(src, ("zeros", "huge", "negative", "reversed", "spread", "max"))
        values = {
            "zeros": lambda: np.zeros(n, np.int64),
            "huge": lambda: np.full(n, 10**15, np.int64),
            "negative": lambda: -np.arange(n, dtype=np.int64) * 1000,
            "reversed": lambda: np.arange(n, 0, -1, dtype=np.int64) * 1000,
            "spread": lambda: np.linspace(0, 10**11, n).astype(np.int64),
            "max": lambda: np.full(n, INT64_MAX, np.int64),
        }
        offsets = values[kind]()
        what += f", offsets {kind}"
    return dataclasses.replace(msg, points=points, point_time_offsets_ns=offsets), what


def camera_message(src: Source, msg: CameraFrame, encoded: dict[str, bytes]) -> tuple[Message, str]:
    kind = weighted(
        src,
        (
            (2, "1x1"),
            (2, "thin"),
            (2, "tall"),
            (1, "large"),
            (2, "black"),
            (2, "white"),
            (2, "noise"),
            (3, "encoded"),
            (3, "bad encoded"),
            (1, "empty encoded"),
        ),
    )
    rng = np.random.default_rng(src.integer(0, 2**32 - 1))
    shape = (375, 1242, 3) if msg.image is None else msg.image.shape
    image: Any = None
    data = None
    encoding = "bgr8"
    if kind == "1x1":
        image = np.zeros((1, 1, 3), np.uint8)
    elif kind == "thin":
        image = np.zeros((1, choice(src, (2, 1242, 8192)), 3), np.uint8)
    elif kind == "tall":
        image = np.zeros((choice(src, (2, 4096)), 1, 3), np.uint8)
    elif kind == "large":
        image = np.zeros((2048, 2048, 3), np.uint8)
    elif kind == "black":
        image = np.zeros(shape, np.uint8)
    elif kind == "white":
        image = np.full(shape, 255, np.uint8)
    elif kind == "noise":
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    elif kind == "encoded":
        encoding = choice(src, ("jpeg", "png"))
        data = encoded[encoding]
    elif kind == "bad encoded":
        encoding = choice(src, ("jpeg", "png"))
        good = encoded[choice(src, ("jpeg", "png"))]
        data = good[: src.integer(1, len(good))] if src.chance(0.5) else src.raw(64)
    else:
        encoding, data = "jpeg", b"\x00"
    frame = CameraFrame(msg.header, image=image, data=data, encoding=encoding)
    return frame, f"image {kind}"


def fix_message(src: Source, msg: GnssFix) -> tuple[Message, str]:
    field = choice(src, ("position", "covariance", "velocity", "heading", "none"))
    if field == "position":
        lat = choice(src, (90.0, -90.0, 0.0, msg.latitude_deg, 89.9999999))
        lon = choice(src, (180.0, -180.0, 0.0, msg.longitude_deg, 179.9999999))
        alt = choice(src, (-12_000.0, 100_000.0, 0.0, msg.altitude_m))
        return dataclasses.replace(msg, latitude_deg=lat, longitude_deg=lon, altitude_m=alt), (
            f"fix at {lat}, {lon}, {alt} m"
        )
    if field == "covariance":
        value = choice(src, (0.0, 1e300, 1e-300))
        return dataclasses.replace(msg, position_covariance_m2=(value,) * 9), f"covariance {value}"
    if field == "velocity":
        v = choice(src, (1e300, -1e300, 340.0, 1e9))
        return dataclasses.replace(msg, velocity_enu_mps=(v, -v, v)), f"velocity {v}"
    if field == "heading":
        h = choice(src, (1e300, -1e300, 1e9, 7 * math.pi))
        return dataclasses.replace(msg, heading_rad=h), f"heading {h}"
    return dataclasses.replace(msg, velocity_enu_mps=None, heading_rad=None), "no velocity/heading"


def rig_message(src: Source, msg: RigMessage) -> tuple[Message, str]:
    doc = copy.deepcopy(msg.rig)
    cameras = doc.get("cameras", {})
    name = next(iter(cameras), "front")
    camera = cameras.get(name, {})
    edit = choice(
        src,
        (
            "focal",
            "principal",
            "size",
            "distortion",
            "rotation",
            "translation",
            "lever arm",
            "time offset",
            "no cameras",
            "extra camera",
            "no lidar frame",
            "model",
            "any",
        ),
    )
    if edit == "focal" and "k" in camera:
        f = choice(src, (1e-9, 1e12, -700.0, 0.0, 1.0))
        camera["k"][0][0] = camera["k"][1][1] = f
    elif edit == "principal" and "k" in camera:
        camera["k"][0][2] = choice(src, (-1e9, 1e9, 0.0))
    elif edit == "size":
        camera["width"], camera["height"] = choice(src, ((1, 1), (65535, 65535), (0, 0), (8, 2)))
    elif edit == "distortion":
        camera["distortion"] = [choice(src, (1e3, -1e3, 0.9, 1e300))] * 5
    elif edit == "rotation":
        frames = doc.get("frames", {})
        if frames:
            frame = frames[choice(src, sorted(frames))]
            angle = src.integer(0, 628) / 100
            c, s = math.cos(angle), math.sin(angle)
            rotation = choice(
                src,
                (
                    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],  # valid, another yaw
                    [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],  # not orthonormal
                    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]],
                ),  # a reflection
            )
            frame["rotation"] = rotation
    elif edit == "translation":
        for frame in doc.get("frames", {}).values():
            frame["translation"] = [choice(src, (1e6, -1e6, 1e300, 0.0))] * 3
    elif edit == "lever arm":
        doc["gnss"] = {"lever_arm_m": [choice(src, (1e6, 1e300, -50.0))] * 3}
    elif edit == "time offset":
        doc["time_offsets_ns"] = {
            choice(src, ("camera/front", "lidar/top", "gnss")): choice(
                src, (10**15, -(10**15), INT64_MAX)
            )
        }
    elif edit == "no cameras":
        doc["cameras"] = {}
    elif edit == "extra camera" and camera:
        cameras["rear"] = copy.deepcopy(camera)
    elif edit == "no lidar frame":
        doc.get("frames", {}).pop("lidar", None)
    elif edit == "model":
        camera["model"] = choice(src, ("equidistant", "fisheye", "orthographic"))
    else:
        paths = doc_paths(doc)
        if paths:
            path = choice(src, paths)
            parent_of(doc, path)[path[-1]] = hostile_value(src)
            edit = "any: " + ".".join(str(p) for p in path)
    return dataclasses.replace(msg, rig=doc), f"rig {edit}"


def header_message(src: Source, msg: Message, tick_ns: int) -> tuple[Message, str]:
    header = msg.header
    what = choice(src, ("stamp", "stream", "frame_id", "seq"))
    if what == "stamp":
        value: Any = choice(
            src,
            (
                0,
                1,
                INT64_MAX,
                tick_ns - 10**12,
                tick_ns + 10**12,
                tick_ns + 3600 * 10**9,
                tick_ns - PERIOD_NS // 2,
            ),
        )
        header = dataclasses.replace(header, stamp_ns=value)
    elif what == "stream":
        value = odd_string(src)
        header = dataclasses.replace(header, stream=value)
    elif what == "frame_id":
        value = odd_string(src)
        header = dataclasses.replace(header, frame_id=value)
    else:
        value = choice(src, (0, INT64_MAX, 2**40))
        header = dataclasses.replace(header, seq=value)
    return dataclasses.replace(msg, header=header), f"header.{what}={short(value)}"
