"""nuScenes scenes -> drives (MCAP, replay.drive).

`import_nuscenes(DATAROOT, OUT, version=..., scene=...)` reads the tables of
`DATAROOT/<version>/*.json` (`replay.datasets.nuscenes_tables`, the devkit's table layout read
directly: the devkit is not a dependency) and writes one scene:

- the rig (`calibrated_sensor` of LIDAR_TOP and the six cameras, see
  `replay.datasets.nuscenes_geometry` for the frames), written first and stored as the drive's
  rig;
- LIDAR_TOP -> stream `lidar/top`, frame `lidar`: x, y, z and intensity (/ 255, to KITTI's
  0-1 reflectance; the ring column is dropped). A nuScenes sweep's timestamp is the end of its
  rotation, and its points are already motion-compensated to that instant (nuScenes paper,
  "Sensor synchronization"), so the sweep is stamped at its *start* (timestamp - the time since
  the previous sweep, nominally 50 ms at 20 Hz) and every point's time offset is the sweep's
  duration: the node's deskew then moves the whole cloud rigidly to the stamp. Log time: the
  timestamp (a sweep is received when complete).
- CAM_FRONT, CAM_FRONT_RIGHT, CAM_FRONT_LEFT, CAM_BACK, CAM_BACK_LEFT, CAM_BACK_RIGHT ->
  streams `camera/front`, `camera/front_right`, ... (frame ids alike): the JPEG bytes as they
  are, stamped (and logged) at their timestamp (the exposure trigger). A camera fires when the
  lidar sweeps across its field of view, so each frame is 5-50 ms after its sweep's stamp.
- the ego poses of every LIDAR_TOP record of the scene (20 Hz, keyframe or not) -> stream `gnss`,
  frame `gnss` (the ego origin): WGS84 fixes of the map position through an origin (`origin`,
  else the reference point of the log's map, `MAP_ORIGINS`), velocity (ENU, m/s) from the
  central difference of neighbouring poses, heading = the pose's yaw (the map frame is ENU:
  x east, y north), position covariance diag(0.1, 0.1, 1.0 m)^2.
- the annotations of each keyframe -> the ground-truth channel (`GROUND_TRUTH_TOPIC`), one
  document per keyframe sweep, stamped with that sweep's stamp: the boxes moved to the stamp
  along their velocity and put in the vehicle frame there (`nuscenes_geometry.box_document`),
  with a per-scene object `id`, `label` (`CATEGORY_LABELS`), the nuScenes `category`,
  `velocity` over the ground (vehicle axes), `lidar_points` (`num_lidar_pts`) and
  `camera_visible` (the middle of the visibility bin).

By default only keyframes are imported (2 Hz: one sweep and six images per sample), so every
sweep has its ground truth (training and `perception eval` pair each sweep with one);
`sweeps=True` imports every sweep and image of the scene (20 Hz lidar, 12 Hz cameras; the
`sweeps/` folder), ground truth still on the keyframe sweeps only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration import CalibrationError, LocalTangentPlane, Rig, RigidTransform
from calibration.images import encoded_image_size
from perception.errors import WireError
from perception.msgs import wire
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep, Message
from replay.datasets.importers import (
    ImportProgress,
    ImportStats,
    atomic_drive,
    camera_offsets_ms,
    encoded_image_fault,
)
from replay.datasets.nuscenes_geometry import (
    EgoTrack,
    box_document,
    label_of,
    nuscenes_rig,
    visible_fraction_of,
)
from replay.datasets.nuscenes_tables import TABLES, NuScenesTables, Record
from replay.drive import GROUND_TRUTH_TOPIC, RIG_TOPIC
from replay.errors import ReplayError

__all__ = [
    "CAMERA_CHANNELS",
    "GNSS_STREAM",
    "LIDAR_CHANNEL",
    "LIDAR_STREAM",
    "MAP_ORIGINS",
    "TABLES",
    "import_nuscenes",
    "read_nuscenes_points",
]

#: nuScenes camera channel -> rig camera name (stream and frame `camera/<name>`).
CAMERA_CHANNELS: dict[str, str] = {
    "CAM_FRONT": "front",
    "CAM_FRONT_RIGHT": "front_right",
    "CAM_FRONT_LEFT": "front_left",
    "CAM_BACK": "back",
    "CAM_BACK_LEFT": "back_left",
    "CAM_BACK_RIGHT": "back_right",
}
LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_STREAM = "lidar/top"
GNSS_STREAM = "gnss"
#: WGS84 (lat deg, lon deg) of each map's origin, altitude 0 m: copied from the nuScenes devkit's
#: nuscenes/scripts/export_poses.py `REFERENCE_COORDINATES` (the maps' reference points; the
#: devkit is not a dependency, see `replay.datasets.nuscenes_tables`).
MAP_ORIGINS: dict[str, tuple[float, float]] = {
    "boston-seaport": (42.336849169438615, -71.05785369873047),
    "singapore-onenorth": (1.2882100868743724, 103.78475189208984),
    "singapore-hollandvillage": (1.2993652317780957, 103.78217697143555),
    "singapore-queenstown": (1.2782562240223188, 103.76741409301758),
}

_NOMINAL_SWEEP_NS = 50_000_000  # LIDAR_TOP turns at 20 Hz
_POINT_COLUMNS = 5  # x, y, z, intensity, ring (float32)
_INTENSITY_SCALE = 1.0 / 255.0
# Localisation against a lidar map: ~0.1 m horizontally; nuScenes poses are 2D (z is always 0).
_SIGMA_H_M = 0.1
_SIGMA_V_M = 1.0
_JPEG = b"\xff\xd8\xff"


# -- opening -------------------------------------------------------------------------------------


def _scene(tables: NuScenesTables, name: str) -> Record:
    scenes = tables.table("scene")
    found = [record for record in scenes if record["name"] == name]
    if len(found) > 1:
        # Which one is meant cannot be told: the first was taken without a word.
        tokens = ", ".join(r["token"] for r in found)
        raise ReplayError(
            f"{tables.root / 'scene.json'}: {len(found)} scenes named {name!r} ({tokens})"
        )
    if found:
        return found[0]
    names = ", ".join(sorted(r["name"] for r in scenes)) or "none"
    raise ReplayError(f"{tables.root}: no scene {name!r}; scenes available: {names}")


# -- reading -------------------------------------------------------------------------------------


def _check_regular(path: Path, what: str) -> None:
    """Refuses a sample file that is a pipe (its read would wait for a writer for ever), a
    folder or a broken link, naming it; a missing one is left to the read, which names it."""
    if path.exists() and not path.is_file():
        raise ReplayError(f"{path}: {what} is not a regular file")
    if path.is_symlink() and not path.exists():
        raise ReplayError(f"{path}: {what} is a broken or looping link")


def read_nuscenes_points(path: Path) -> npt.NDArray[np.float32]:
    """A nuScenes lidar `.pcd.bin` (float32 x, y, z, intensity 0-255, ring) as N x 4 float32
    (x, y, z m in the sensor frame, intensity 0-1).

    Raises ReplayError naming the file when it is not a regular file, cannot be read, is
    empty, is not a whole number of 20-byte points, or holds non-finite values."""
    _check_regular(path, "the lidar sweep")
    point_bytes = _POINT_COLUMNS * 4
    try:
        # The file's own size: np.fromfile drops a partial float32 at the end without a word,
        # so an 82-byte file (4 points and 2 bytes) was read as 4 points.
        size = path.stat().st_size
        if size == 0 or size % point_bytes:
            raise ReplayError(
                f"{path}: {size} bytes is not a whole number of {point_bytes}-byte points "
                "(x, y, z, intensity, ring float32)"
            )
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise ReplayError(f"{path}: cannot read the lidar sweep ({e.strerror or e})") from e
    if raw.size * 4 != size:  # the file changed while it was read
        raise ReplayError(f"{path}: lidar sweep changed size while it was read")
    points = raw.reshape(-1, _POINT_COLUMNS)[:, :4].copy()
    if not np.all(np.isfinite(points)):
        raise ReplayError(f"{path}: lidar sweep has non-finite values")
    points[:, 3] *= np.float32(_INTENSITY_SCALE)
    return points


def _read_jpeg(path: Path, size: tuple[int, int]) -> bytes:
    """The JPEG file's bytes, checked to be a JPEG of `size` (width, height: its record's)."""
    _check_regular(path, "the image")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReplayError(f"{path}: cannot read image ({e.strerror or e})") from e
    if not data.startswith(_JPEG):
        raise ReplayError(f"{path}: not a JPEG image")
    # Copied as it is, not decoded: an image cut short, or of another size than the camera's
    # (the rig's, from the records), would pass into the drive and fail only when replayed.
    fault = encoded_image_fault(data, "jpeg")
    if fault is not None:
        raise ReplayError(f"{path}: {fault}")
    found = encoded_image_size(data)
    if found != size:
        got = "no size in its header" if found is None else f"{found[0]}x{found[1]}"
        raise ReplayError(f"{path}: image is {got}, its sample_data says {size[0]}x{size[1]}")
    return data


# -- the scene's records -------------------------------------------------------------------------


def _follow(tables: NuScenesTables, table: str, record: Record, link: str) -> list[Record]:
    """`record` and the records its `link` ("prev" or "next") leads to, in that order."""
    out = [record]
    seen = {record["token"]}
    while record[link]:
        record = tables.get(table, record[link], via=f"{table} {record['token']}.{link}")
        if record["token"] in seen:  # a malformed table must not loop forever
            raise ReplayError(
                f"{tables.root / f'{table}.json'}: the {link} links loop at {record['token']}"
            )
        seen.add(record["token"])
        out.append(record)
    return out


def _samples(tables: NuScenesTables, scene: Record) -> list[Record]:
    via = f"scene {scene['token']}.first_sample_token"
    return _follow(
        tables, "sample", tables.get("sample", scene["first_sample_token"], via=via), "next"
    )


def _channel(
    tables: NuScenesTables, samples: Sequence[Record], channel: str, keyframes: bool
) -> list[Record]:
    """The `sample_data` of `channel` in the scene: its keyframes, or its whole chain."""
    tokens = [tables.keyframes[s["token"]].get(channel) for s in samples]
    keys = [tables.get("sample_data", t) for t in tokens if t is not None]
    if keyframes or not keys:
        return keys
    first = _follow(tables, "sample_data", keys[0], "prev")[-1]
    chain = _follow(tables, "sample_data", first, "next")
    # A damaged prev/next link leads into another scene or channel: its records (and their
    # ego poses) were taken as this scene's, without a word.
    scene = {s["token"] for s in samples}
    for record in chain:
        other = tables.channel_of[record["token"]]
        if other != channel or record["sample_token"] not in scene:
            where = f"channel {other}" if other != channel else "a sample of another scene"
            raise ReplayError(
                f"{tables.root / 'sample_data.json'}: the {channel} prev/next links lead to "
                f"{record['token']}, of {where}"
            )
    return chain


def _sweep_duration_ns(tables: NuScenesTables, record: Record) -> int:
    """Time since the previous sweep (the rotation this sweep completed); nominal 50 ms at the
    start of a scene or across a gap."""
    if record["prev"]:
        previous = tables.get(
            "sample_data", record["prev"], via=f"sample_data {record['token']}.prev"
        )
        d = (int(record["timestamp"]) - int(previous["timestamp"])) * 1000
        if 0 < d <= 2 * _NOMINAL_SWEEP_NS:
            return d
    return _NOMINAL_SWEEP_NS


def _calibration(tables: NuScenesTables, records: Sequence[Record], channel: str) -> Record:
    tokens = {r["calibrated_sensor_token"] for r in records}
    if len(tokens) > 1:
        raise ReplayError(
            f"{channel}: {len(tokens)} calibrations within one scene; the rig holds one"
        )
    via = f"sample_data {records[0]['token']}.calibrated_sensor_token"
    return tables.get("calibrated_sensor", records[0]["calibrated_sensor_token"], via=via)


# -- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    """One message to write, loaded when written: (log time, rank) orders the drive."""

    log_time_ns: int
    rank: int
    topic: str
    load: Callable[[], Message | dict[str, Any]]
    source: str
    """The file or records it is read from, which an error names."""


def _gnss_items(track: EgoTrack, plane: LocalTangentPlane) -> list[_Item]:
    var_h, var_v = _SIGMA_H_M**2, _SIGMA_V_M**2
    cov = (var_h, 0.0, 0.0, 0.0, var_h, 0.0, 0.0, 0.0, var_v)
    items = []
    for i, stamp in enumerate(track.stamps_ns):
        lat, lon, alt = (float(v) for v in plane.enu_to_geodetic(track.translations[i]))
        heading = track.global_from_ego(stamp).yaw
        fix = GnssFix(
            Header(GNSS_STREAM, i, stamp, "gnss"),
            lat,
            lon,
            alt,
            cov,
            track.velocity_mps(i),
            heading,
        )
        try:
            # What the drive checks when it is written, said here with the pose it came from
            # (a pose 1e7 m away was the writer's WireError: a speed, and no record named).
            wire.encode(fix)
        except WireError as e:
            raise ReplayError(
                f"ego_pose: the poses around timestamp {stamp // 1000} us (a fix's velocity is "
                f"its neighbours') give no valid GNSS fix ({e})"
            ) from None
        items.append(
            _Item(stamp, 0, GNSS_STREAM, partial(_given, fix), f"ego_pose at {stamp // 1000} us")
        )
    return items


def _given(value: Message | dict[str, Any]) -> Message | dict[str, Any]:
    return value


def _lidar_message(path: Path, seq: int, stamp: int, duration: int) -> LidarSweep:
    points = read_nuscenes_points(path)
    offsets = np.full(len(points), duration, dtype=np.int64)
    return LidarSweep(Header(LIDAR_STREAM, seq, stamp, "lidar"), points, offsets)


def _camera_message(
    path: Path, topic: str, seq: int, stamp: int, size: tuple[int, int]
) -> CameraFrame:
    data = _read_jpeg(path, size)
    return CameraFrame(Header(topic, seq, stamp, topic), data=data, encoding="jpeg")


def _truth(
    tables: NuScenesTables,
    sample: Record,
    seq: int,
    stamp: int,
    *,
    track: EgoTrack,
    vehicle_from_ego: RigidTransform,
    ids: dict[str, int],
) -> dict[str, Any]:
    """The ground-truth document of a keyframe sweep stamped `stamp` (see the module docstring)."""
    vehicle_from_global = vehicle_from_ego @ track.global_from_ego(stamp).inverse()
    annotated = int(sample["timestamp"]) * 1000
    boxes = []
    for token in tables.annotations[sample["token"]]:
        ann = tables.get("sample_annotation", token)
        category = tables.category_of[token]
        via = f"sample_annotation {token}"
        attributes = [tables.get("attribute", a, via=via)["name"] for a in ann["attribute_tokens"]]
        level = (
            tables.get("visibility", ann["visibility_token"], via=via)["level"]
            if ann["visibility_token"]
            else None
        )
        boxes.append(
            box_document(
                ann,
                ident=ids.setdefault(ann["instance_token"], len(ids)),
                label=label_of(category, attributes),
                category=category,
                velocity_global=tables.box_velocity(token),
                annotated_ns=annotated,
                stamp_ns=stamp,
                vehicle_from_global=vehicle_from_global,
                visible=visible_fraction_of(level),
            )
        )
    return {"seq": seq, "stamp_ns": stamp, "sample_token": sample["token"], "boxes": boxes}


def _origin(
    tables: NuScenesTables, scene: Record, origin: tuple[float, float, float] | None
) -> LocalTangentPlane:
    if origin is not None:
        return LocalTangentPlane(*origin)
    via = f"scene {scene['token']}.log_token"
    location = tables.get("log", scene["log_token"], via=via)["location"]
    if location not in MAP_ORIGINS:
        raise ReplayError(
            f"scene {scene['name']}: map {location!r} has no known origin "
            f"(known: {', '.join(MAP_ORIGINS)}); give --origin LAT,LON,ALT"
        )
    lat, lon = MAP_ORIGINS[location]
    return LocalTangentPlane(lat, lon, 0.0)


def _plan(
    tables: NuScenesTables,
    dataroot: Path,
    scene: Record,
    origin: tuple[float, float, float] | None,
    sweeps: bool,
) -> tuple[Rig, list[_Item], dict[str, Any]]:
    """The rig and every message of the scene, in drive order, with what the stats need."""
    samples = _samples(tables, scene)
    lidar = _channel(tables, samples, LIDAR_CHANNEL, keyframes=not sweeps)
    if not lidar:
        raise ReplayError(f"scene {scene['name']}: no {LIDAR_CHANNEL} sample_data")
    everything = _channel(tables, samples, LIDAR_CHANNEL, keyframes=False)
    poses = [
        tables.get("ego_pose", r["ego_pose_token"], via=f"sample_data {r['token']}.ego_pose_token")
        for r in everything
    ]
    track = EgoTrack.from_records(poses)
    cameras = {ch: _channel(tables, samples, ch, keyframes=not sweeps) for ch in CAMERA_CHANNELS}
    cams = {
        CAMERA_CHANNELS[ch]: (_calibration(tables, recs, ch), recs[0]["width"], recs[0]["height"])
        for ch, recs in cameras.items()
        if recs
    }
    source = f"nuScenes {tables.root.name} {scene['name']} calibrated_sensor"
    rig, vehicle_from_ego = nuscenes_rig(
        _calibration(tables, lidar, LIDAR_CHANNEL), cams, source=source
    )
    items = _gnss_items(track, _origin(tables, scene, origin))
    ids: dict[str, int] = {}
    sweep_stamps: list[int] = []
    for seq, rec in enumerate(lidar):
        end = int(rec["timestamp"]) * 1000
        duration = _sweep_duration_ns(tables, rec)
        stamp = end - duration
        sweep_stamps.append(stamp)
        path = dataroot / rec["filename"]
        sweep = partial(_lidar_message, path, seq, stamp, duration)
        items.append(_Item(end, 1, LIDAR_STREAM, sweep, str(path)))
        if rec["is_key_frame"]:
            sample = tables.get("sample", rec["sample_token"])
            doc = _truth(
                tables, sample, seq, stamp, track=track, vehicle_from_ego=vehicle_from_ego, ids=ids
            )
            items.append(
                _Item(end, 2, GROUND_TRUTH_TOPIC, partial(_given, doc), f"sample {sample['token']}")
            )
    camera_stamps: dict[str, list[int]] = {}
    for rank, (channel, records) in enumerate(cameras.items(), start=3):
        topic = f"camera/{CAMERA_CHANNELS[channel]}"
        for seq, rec in enumerate(records):
            stamp = int(rec["timestamp"]) * 1000
            camera_stamps.setdefault(topic, []).append(stamp)
            path = dataroot / rec["filename"]
            size = (rec["width"], rec["height"])
            frame = partial(_camera_message, path, topic, seq, stamp, size)
            items.append(_Item(stamp, rank, topic, frame, str(path)))
    items.sort(key=lambda it: (it.log_time_ns, it.rank))
    frames = [stamp for stamps in camera_stamps.values() for stamp in stamps]
    ends = [int(r["timestamp"]) * 1000 for r in lidar]
    stats = {
        "offsets": camera_offsets_ms(sweep_stamps, camera_stamps),
        "first": min([*sweep_stamps, *track.stamps_ns, *frames]),
        "last": max([*ends, *track.stamps_ns, *frames]),
    }
    return rig, items, stats


def import_nuscenes(
    dataroot: Path,
    out: Path,
    *,
    version: str,
    scene: str,
    origin: tuple[float, float, float] | None,
    progress: ImportProgress | None,
    sweeps: bool = False,
    compression: str | None = "zstd",
    overwrite: bool = True,
) -> ImportStats:
    """Import the scene `scene` of the nuScenes tables `dataroot`/`version` (e.g. v1.0-mini)
    into the drive `out`; see the module docstring for the streams. `origin`: the WGS84 (lat
    deg, lon deg, alt m) of the map frame's origin (default: the log's map's, `MAP_ORIGINS`).
    `sweeps`: every sweep and image, not only the keyframes. `progress(done, total)` is called
    after each message written. `overwrite`: see replay.datasets.importers.atomic_drive.

    The file appears only when complete. Raises ReplayError (one line, naming the folder or
    file): DATAROOT, the version folder or a table missing, a table malformed
    (`NuScenesTables.load`) or a token that is not in its table, an unknown scene (listing those
    available), a map without a known origin and no `origin`, a sensor recalibrated within the
    scene, a sample file missing or malformed."""
    begin = time.perf_counter()
    dataroot = Path(dataroot)
    tables = NuScenesTables.load(dataroot, version)
    table_root = tables.root
    record = _scene(tables, scene)
    try:
        rig, items, info = _plan(tables, dataroot, record, origin, sweeps)
    except (CalibrationError, ValueError) as e:
        raise ReplayError(f"{table_root}: {scene}: {e}") from e
    except (KeyError, TypeError, IndexError) as e:
        raise ReplayError(
            f"{table_root}: {scene}: malformed tables ({type(e).__name__}: {e})"
        ) from e
    counts: dict[str, int] = {RIG_TOPIC: 1}
    with atomic_drive(Path(out), compression, overwrite=overwrite) as writer:
        writer.write_rig(rig, info["first"])
        for done, item in enumerate(items, start=1):
            msg = item.load()
            if isinstance(msg, dict):
                writer.write_ground_truth(msg, item.log_time_ns)
            else:
                writer.write(msg, item.log_time_ns, item.topic, source=item.source)
            counts[item.topic] = counts.get(item.topic, 0) + 1
            if progress is not None:
                progress(done, len(items))
        written = writer.bytes_written
    return ImportStats(
        path=Path(out),
        messages=counts,
        first_stamp_ns=info["first"],
        last_stamp_ns=info["last"],
        bytes=written,
        wall_s=time.perf_counter() - begin,
        camera_offsets_ms=info["offsets"],
        warnings=tuple(rig.warnings),
    )
