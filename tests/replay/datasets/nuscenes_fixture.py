"""A small nuScenes dataset written by the tests, in the devkit's layout
(`DATAROOT/v1.0-mini/*.json`, `samples/`, `sweeps/`, `maps/`).

Modelled on v1.0-mini's scene-0061 (log n015-2018-07-24-11-22-45+0800, singapore-onenorth) with
the field layouts of the devkit's `docs/schema_nuscenes.md`: LIDAR_TOP's and CAM_FRONT's
`calibrated_sensor` records, the six cameras' intrinsics (1600 x 900) of vehicle n015, the first
sample's timestamps (the six cameras and the sweep) and first ego pose are scene-0061's; the other
cameras' extrinsics are the rig layout (yaw 0, +-55, +-110, 180 degrees) with rounded mounting
positions, not the real records. ego_pose tokens equal their sample_data tokens, as in nuScenes.

The scene has `SAMPLES` keyframes 500 ms apart; LIDAR_TOP runs at 20 Hz (one sweep before the
first keyframe and nine between keyframes, in `sweeps/`); each camera has two frames between
keyframes (fewer than the real 12 Hz, to keep the test fast). The ego drives straight at
`EGO_VELOCITY` with the real first pose's orientation. Annotations: a moving car (3 samples), a
standing pedestrian (3), a cyclist (bicycle with rider, annotated once: velocity unknown), a
traffic cone and a dog (animal -> unknown). A second scene, scene-0103 (boston-seaport), has one
sample of its own. RADAR_FRONT has records but no files (the importer must not read them).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

VERSION = "v1.0-mini"
SCENE = "scene-0061"
OTHER_SCENE = "scene-0103"
LOG = "n015-2018-07-24-11-22-45+0800"
SAMPLES = 3
SAMPLE_PERIOD_US = 500_000
SWEEP_PERIOD_US = 50_000
FIRST_LIDAR_US = 1532402927647951
#: The first sample's camera timestamps of scene-0061 (µs).
FIRST_CAMERA_US = {
    "CAM_FRONT": 1532402927612460,
    "CAM_FRONT_RIGHT": 1532402927620339,
    "CAM_FRONT_LEFT": 1532402927604844,
    "CAM_BACK": 1532402927637525,
    "CAM_BACK_LEFT": 1532402927647423,
    "CAM_BACK_RIGHT": 1532402927627893,
}
EGO_FIRST_TRANSLATION = (411.3039349319818, 1180.8903791765097, 0.0)
EGO_ROTATION = (
    0.5720320396729045,
    -0.0016977771610471074,
    0.011798001930183783,
    -0.8201446642457809,
)
EGO_VELOCITY = (-4.0, -1.5, 0.0)  # m/s, map axes
LIDAR_CALIB = {
    "translation": [0.985793, 0.0, 1.84019],
    "rotation": [
        0.706749235646644,
        -0.015300993788500868,
        0.01739745181256607,
        -0.7070846669051719,
    ],
    "camera_intrinsic": [],
}
INTRINSICS = {
    "CAM_FRONT": (1266.417203046554, 816.2670197447984, 491.50706579294757),
    "CAM_FRONT_LEFT": (1272.5979470598488, 826.6154927353808, 479.75165386361925),
    "CAM_FRONT_RIGHT": (1260.8474446004698, 807.968244525554, 495.3344268742088),
    "CAM_BACK": (809.2209905677063, 829.2196003259838, 481.77842384512485),
    "CAM_BACK_LEFT": (1256.7414812095406, 792.1125740759628, 492.7757465151356),
    "CAM_BACK_RIGHT": (1259.5137405846733, 807.2529053838625, 501.19579884916527),
}
# Yaw of each camera's optical axis (deg, ego frame) and rounded mounting position (m).
_CAMERA_LAYOUT = {
    "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.49, 1.50)),
    "CAM_FRONT_LEFT": (55.0, (1.52, 0.49, 1.51)),
    "CAM_BACK": (180.0, (0.03, 0.0, 1.58)),
    "CAM_BACK_LEFT": (110.0, (1.04, 0.48, 1.59)),
    "CAM_BACK_RIGHT": (-110.0, (1.01, -0.48, 1.56)),
}
FRONT_CALIB = {
    "translation": [1.70079118954, 0.0159456324149, 1.51095763913],
    "rotation": [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
}
WIDTH, HEIGHT = 1600, 900
ORIGIN_ONENORTH = (1.2882100868743724, 103.78475189208984)

CATEGORIES = (
    "vehicle.car",
    "human.pedestrian.adult",
    "vehicle.bicycle",
    "movable_object.trafficcone",
    "animal",
)
ATTRIBUTES = ("vehicle.moving", "pedestrian.standing", "cycle.with_rider", "cycle.without_rider")
VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


def token(*parts: object) -> str:
    """A deterministic 32-hex token, like nuScenes' own."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def quat_mul(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    )


def yaw_quat(yaw_rad: float) -> tuple[float, float, float, float]:
    return (math.cos(yaw_rad / 2), 0.0, 0.0, math.sin(yaw_rad / 2))


@dataclass(frozen=True)
class Instance:
    """An annotated object: category, attribute, visibility token, size (w, l, h), the
    samples annotated, its centre at the first sample (map frame) and velocity (map axes)."""

    name: str
    category: str
    attribute: str | None
    visibility: str
    size: tuple[float, float, float]
    samples: tuple[int, ...]
    center0: tuple[float, float, float]
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    lidar_points: int = 10


INSTANCES = (
    Instance(
        "car",
        "vehicle.car",
        "vehicle.moving",
        "4",
        (1.9, 4.6, 1.7),
        (0, 1, 2),
        (400.0, 1175.0, 0.9),
        (-3.0, 2.0, 0.0),
        math.atan2(2.0, -3.0),
        120,
    ),
    Instance(
        "walker",
        "human.pedestrian.adult",
        "pedestrian.standing",
        "2",
        (0.6, 0.7, 1.8),
        (0, 1, 2),
        (405.0, 1183.0, 0.95),
        lidar_points=15,
    ),
    Instance(
        "cyclist",
        "vehicle.bicycle",
        "cycle.with_rider",
        "3",
        (0.7, 1.8, 1.6),
        (1,),
        (398.0, 1177.0, 0.85),
        yaw=0.3,
        lidar_points=30,
    ),
    Instance(
        "cone",
        "movable_object.trafficcone",
        None,
        "1",
        (0.4, 0.4, 0.8),
        (0, 1),
        (408.0, 1181.0, 0.4),
        lidar_points=3,
    ),
    Instance("dog", "animal", None, "4", (0.3, 0.8, 0.5), (2,), (402.0, 1186.0, 0.3)),
)


@dataclass
class Fixture:
    """The dataset written and what the tests check against."""

    root: Path
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lidar_keys: list[dict[str, Any]] = field(default_factory=list)  # keyframe sample_data
    lidar_all: list[dict[str, Any]] = field(default_factory=list)
    camera_all: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.tables[name]

    def record(self, table: str, tok: str) -> dict[str, Any]:
        return next(r for r in self.tables[table] if r["token"] == tok)


def lidar_points(seq: int) -> np.ndarray:
    """The sweep file's N x 5 float32 (x, y, z, intensity 0-255, ring), distinct per sweep."""
    pts = np.array(
        [
            [0.0, 10.0, -1.8, 100.0, 5.0],
            [-10.0, 0.5, -1.7, 50.0, 10.0],
            [3.0, -20.0, 0.2, 255.0, 31.0],
            [12.5, 4.0, -1.0, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    pts[:, 0] += np.float32(0.01 * seq)
    return pts


def _jpeg(seed: int) -> bytes:
    image = np.full((HEIGHT, WIDTH, 3), (seed * 37) % 256, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return bytes(buf)


def _camera_calib(channel: str) -> dict[str, Any]:
    fx, cx, cy = INTRINSICS[channel]
    calib: dict[str, Any]
    if channel == "CAM_FRONT":
        calib = dict(FRONT_CALIB)
    else:
        yaw_deg, position = _CAMERA_LAYOUT[channel]
        base = (0.5, -0.5, 0.5, -0.5)  # camera axes (x right, y down, z forward) in the ego's
        calib = {
            "translation": list(position),
            "rotation": list(quat_mul(yaw_quat(math.radians(yaw_deg)), base)),
        }
    calib["camera_intrinsic"] = [[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]]
    return calib


def ego_translation(t_us: int) -> list[float]:
    dt = (t_us - FIRST_LIDAR_US) * 1e-6
    return [p + v * dt for p, v in zip(EGO_FIRST_TRANSLATION, EGO_VELOCITY, strict=True)]


def write_nuscenes(root: Path, *, sweeps_files: bool = True) -> Fixture:
    """Write the dataset under `root` (the DATAROOT); the files of non-keyframes only with
    `sweeps_files`."""
    fx = Fixture(root)
    t: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in (
            "category",
            "attribute",
            "visibility",
            "instance",
            "sensor",
            "calibrated_sensor",
            "ego_pose",
            "log",
            "scene",
            "sample",
            "sample_data",
            "sample_annotation",
            "map",
        )
    }
    fx.tables = t
    logs = {
        "n015": (LOG, "singapore-onenorth", "2018-07-24"),
        "n008": ("n008-2018-08-01-15-16-36-0400", "boston-seaport", "2018-08-01"),
    }
    for vehicle, (logfile, location, date) in logs.items():
        t["log"].append(
            {
                "token": token("log", logfile),
                "logfile": logfile,
                "vehicle": vehicle,
                "date_captured": date,
                "location": location,
            }
        )
    for location in ("singapore-onenorth", "boston-seaport"):
        map_token = token("map", location)
        filename = f"maps/{map_token}.png"
        (root / "maps").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / filename), np.zeros((4, 4), np.uint8))
        log_tokens = [r["token"] for r in t["log"] if r["location"] == location]
        t["map"].append(
            {
                "token": map_token,
                "log_tokens": log_tokens,
                "category": "semantic_prior",
                "filename": filename,
            }
        )
    for i, name in enumerate(CATEGORIES):
        t["category"].append(
            {
                "token": token("category", name),
                "name": name,
                "description": f"{name} (test)",
                "index": i,
            }
        )
    for name in ATTRIBUTES:
        t["attribute"].append(
            {"token": token("attribute", name), "name": name, "description": name}
        )
    for tok, level in VISIBILITY:
        t["visibility"].append({"token": tok, "level": level, "description": level})
    channels = {"LIDAR_TOP": "lidar", **dict.fromkeys(INTRINSICS, "camera"), "RADAR_FRONT": "radar"}
    calib_tokens = {}
    for channel, modality in channels.items():
        sensor = token("sensor", channel)
        t["sensor"].append({"token": sensor, "channel": channel, "modality": modality})
        if channel == "LIDAR_TOP":
            calib = dict(LIDAR_CALIB)
        elif modality == "camera":
            calib = _camera_calib(channel)
        else:
            calib = {
                "translation": [3.412, 0.0, 0.5],
                "camera_intrinsic": [],
                "rotation": [0.9999984769132877, 0.0, 0.0, 0.0017453283658983088],
            }
        calib_tokens[channel] = token("calibrated_sensor", channel)
        t["calibrated_sensor"].append(
            {"token": calib_tokens[channel], "sensor_token": sensor, **calib}
        )

    scene_token = token("scene", SCENE)
    sample_times = [FIRST_LIDAR_US + k * SAMPLE_PERIOD_US for k in range(SAMPLES)]
    sample_tokens = [token("sample", k) for k in range(SAMPLES)]
    for k, ts in enumerate(sample_times):
        t["sample"].append(
            {
                "token": sample_tokens[k],
                "timestamp": ts,
                "scene_token": scene_token,
                "prev": sample_tokens[k - 1] if k else "",
                "next": sample_tokens[k + 1] if k + 1 < SAMPLES else "",
            }
        )
    t["scene"].append(
        {
            "token": scene_token,
            "name": SCENE,
            "log_token": token("log", LOG),
            "description": "Parked truck, construction, intersection, turn left, following a van",
            "nbr_samples": SAMPLES,
            "first_sample_token": sample_tokens[0],
            "last_sample_token": sample_tokens[-1],
        }
    )

    def next_sample(ts: int) -> str:
        """A non-keyframe points to the sample that follows closest in time."""
        k = next((k for k, s in enumerate(sample_times) if s >= ts), SAMPLES - 1)
        return sample_tokens[k]

    def chain(channel: str, times: list[tuple[int, int | None]], ext: str) -> list[dict[str, Any]]:
        """sample_data of `channel` at (timestamp, sample index of a keyframe or None)."""
        records = []
        for i, (ts, k) in enumerate(times):
            tok = token("sample_data", channel, i)
            key = k is not None
            folder = "samples" if key else "sweeps"
            is_camera = ext == "jpg"
            sample = sample_tokens[k] if k is not None else next_sample(ts)
            records.append(
                {
                    "token": tok,
                    "sample_token": sample,
                    "ego_pose_token": tok,
                    "calibrated_sensor_token": calib_tokens[channel],
                    "timestamp": ts,
                    "fileformat": ext if is_camera else "pcd",
                    "is_key_frame": key,
                    "height": HEIGHT if is_camera else 0,
                    "width": WIDTH if is_camera else 0,
                    "filename": f"{folder}/{channel}/{LOG}__{channel}__{ts}.{ext}",
                    "prev": token("sample_data", channel, i - 1) if i else "",
                    "next": token("sample_data", channel, i + 1) if i + 1 < len(times) else "",
                }
            )
            t["ego_pose"].append(
                {
                    "token": tok,
                    "timestamp": ts,
                    "translation": ego_translation(ts),
                    "rotation": list(EGO_ROTATION),
                }
            )
        t["sample_data"].extend(records)
        return records

    lidar_times: list[tuple[int, int | None]] = [(FIRST_LIDAR_US - SWEEP_PERIOD_US, None)]
    for k in range(SAMPLES):
        lidar_times.append((sample_times[k], k))
        if k + 1 < SAMPLES:
            lidar_times += [(sample_times[k] + j * SWEEP_PERIOD_US, None) for j in range(1, 10)]
    fx.lidar_all = chain("LIDAR_TOP", lidar_times, "pcd.bin")
    fx.lidar_keys = [r for r in fx.lidar_all if r["is_key_frame"]]
    for seq, rec in enumerate(fx.lidar_all):
        if rec["is_key_frame"] or sweeps_files:
            path = root / rec["filename"]
            path.parent.mkdir(parents=True, exist_ok=True)
            lidar_points(seq).tofile(path)
    for c, (channel, first) in enumerate(FIRST_CAMERA_US.items()):
        times: list[tuple[int, int | None]] = []
        for k in range(SAMPLES):
            key_ts = first + k * SAMPLE_PERIOD_US
            times.append((key_ts, k))
            if k + 1 < SAMPLES:
                times += [(key_ts + 166_667, None), (key_ts + 333_333, None)]
        records = chain(channel, times, "jpg")
        fx.camera_all[channel] = records
        for i, rec in enumerate(records):
            if rec["is_key_frame"] or sweeps_files:
                path = root / rec["filename"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_jpeg(c * 10 + i))
    radar = chain("RADAR_FRONT", [(ts - 10_000, k) for k, ts in enumerate(sample_times)], "pcd")
    assert radar  # records only: no files

    for inst in INSTANCES:
        inst_token = token("instance", inst.name)
        anns = [token("sample_annotation", inst.name, k) for k in inst.samples]
        for j, k in enumerate(inst.samples):
            dt = (sample_times[k] - sample_times[inst.samples[0]]) * 1e-6
            center = [c + v * dt for c, v in zip(inst.center0, inst.velocity, strict=True)]
            t["sample_annotation"].append(
                {
                    "token": anns[j],
                    "sample_token": sample_tokens[k],
                    "instance_token": inst_token,
                    "attribute_tokens": [token("attribute", inst.attribute)]
                    if inst.attribute
                    else [],
                    "visibility_token": inst.visibility,
                    "translation": center,
                    "size": list(inst.size),
                    "rotation": list(yaw_quat(inst.yaw)),
                    "num_lidar_pts": inst.lidar_points,
                    "num_radar_pts": 0,
                    "prev": anns[j - 1] if j else "",
                    "next": anns[j + 1] if j + 1 < len(anns) else "",
                }
            )
        t["instance"].append(
            {
                "token": inst_token,
                "category_token": token("category", inst.category),
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0],
                "last_annotation_token": anns[-1],
            }
        )

    # scene-0103: one sample in Boston with its own keyframes (files not written: never read).
    other = token("scene", OTHER_SCENE)
    other_sample = token("sample", "other")
    t["scene"].append(
        {
            "token": other,
            "name": OTHER_SCENE,
            "log_token": t["log"][1]["token"],
            "description": "other",
            "nbr_samples": 1,
            "first_sample_token": other_sample,
            "last_sample_token": other_sample,
        }
    )
    t["sample"].append(
        {
            "token": other_sample,
            "timestamp": 1533151603547590,
            "scene_token": other,
            "prev": "",
            "next": "",
        }
    )
    other_sd = token("sample_data", "other-lidar")
    t["sample_data"].append(
        {
            "token": other_sd,
            "sample_token": other_sample,
            "ego_pose_token": other_sd,
            "calibrated_sensor_token": calib_tokens["LIDAR_TOP"],
            "timestamp": 1533151603547590,
            "fileformat": "pcd",
            "is_key_frame": True,
            "height": 0,
            "width": 0,
            "filename": "samples/LIDAR_TOP/other.pcd.bin",
            "prev": "",
            "next": "",
        }
    )
    t["ego_pose"].append(
        {
            "token": other_sd,
            "timestamp": 1533151603547590,
            "translation": [600.0, 1600.0, 0.0],
            "rotation": [1.0, 0.0, 0.0, 0.0],
        }
    )

    (root / VERSION).mkdir(parents=True, exist_ok=True)
    for name, rows in t.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(rows, indent=0))
    return fx
