"""The nuScenes importer on a nuScenes-format dataset written by the test
(`nuscenes_fixture`: modelled on v1.0-mini scene-0061). Expected values come from the fixture's
records, transformed with scipy's `Rotation` (a path independent of the importer's own
quaternion and matrix code)."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from calibration import LocalTangentPlane
from perception.msgs.types import CameraFrame, GnssFix, LidarSweep
from replay.datasets.nuscenes import import_nuscenes, read_nuscenes_points
from replay.drive import DriveReader
from replay.errors import ReplayError
from replay.synth.world import read_drive_ground_truth
from tests.replay.datasets.nuscenes_fixture import (
    CATEGORIES,
    EGO_ROTATION,
    EGO_VELOCITY,
    FIRST_CAMERA_US,
    INSTANCES,
    INTRINSICS,
    LIDAR_CALIB,
    ORIGIN_ONENORTH,
    OTHER_SCENE,
    SCENE,
    VERSION,
    Fixture,
    ego_translation,
    lidar_points,
    token,
    write_nuscenes,
)

NAMES = {
    "CAM_FRONT": "front",
    "CAM_FRONT_RIGHT": "front_right",
    "CAM_FRONT_LEFT": "front_left",
    "CAM_BACK": "back",
    "CAM_BACK_LEFT": "back_left",
    "CAM_BACK_RIGHT": "back_right",
}
LIDAR_T = np.array(LIDAR_CALIB["translation"])


def _rotation(q_wxyz: Any) -> Rotation:
    """A nuScenes quaternion (w, x, y, z) as scipy's, which takes (x, y, z, w)."""
    w, x, y, z = q_wxyz
    return Rotation.from_quat([x, y, z, w])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return write_nuscenes(tmp_path_factory.mktemp("nuscenes") / "data")


@pytest.fixture(scope="module")
def keyframes(dataset: Fixture) -> tuple[Path, Any]:
    out = dataset.root.parent / "keyframes.mcap"
    calls: list[tuple[int, int]] = []
    stats = import_nuscenes(
        dataset.root,
        out,
        version=VERSION,
        scene=SCENE,
        origin=None,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1][0] == calls[-1][1] == sum(stats.messages.values()) - 1  # all but the rig
    return out, stats


def _records(reader: DriveReader, topic: str) -> list[Any]:
    return list(reader.messages(topics=[topic]))


def test_streams_of_the_keyframes(dataset: Fixture, keyframes: tuple[Path, Any]) -> None:
    out, stats = keyframes
    cams = {f"camera/{n}": 3 for n in NAMES.values()}
    assert stats.messages == {"rig": 1, "gnss": 22, "lidar/top": 3, "ground_truth": 3, **cams}
    reader = DriveReader(out)
    assert reader.topics() == {"rig": 1, "gnss": 22, "lidar/top": 3, **cams}
    # Lidar: the files' x, y, z and intensity / 255, stamped at the sweep start (the previous
    # sweep's timestamp), every point at the end (the nuScenes timestamp), logged at the end.
    sweeps = _records(reader, "lidar/top")
    for rec, sd in zip(sweeps, dataset.lidar_keys, strict=True):
        sweep = rec.message
        assert isinstance(sweep, LidarSweep)
        seq = dataset.lidar_all.index(sd)
        expected = lidar_points(seq)[:, :4].copy()
        expected[:, 3] /= 255.0
        np.testing.assert_allclose(sweep.points, expected, rtol=1e-6)
        prev = dataset.lidar_all[seq - 1]["timestamp"]
        assert sweep.header.stamp_ns == prev * 1000
        assert sweep.header.frame_id == "lidar"
        assert rec.log_time_ns == sd["timestamp"] * 1000
        assert sweep.point_time_offsets_ns is not None
        assert set(sweep.point_time_offsets_ns.tolist()) == {(sd["timestamp"] - prev) * 1000}
    # Cameras: the JPEG bytes as they are, stamped at their timestamp.
    for channel, name in NAMES.items():
        frames = _records(reader, f"camera/{name}")
        keys = [r for r in dataset.camera_all[channel] if r["is_key_frame"]]
        for rec, sd in zip(frames, keys, strict=True):
            frame = rec.message
            assert isinstance(frame, CameraFrame)
            assert frame.encoding == "jpeg"
            assert frame.data == (dataset.root / sd["filename"]).read_bytes()
            assert frame.header.stamp_ns == rec.log_time_ns == sd["timestamp"] * 1000
            assert frame.header.frame_id == f"camera/{name}"
    # Each camera fires while the lidar sweeps across it: 5-50 ms after the sweep's stamp.
    first_start = (dataset.lidar_keys[0]["timestamp"] - 50_000) * 1000
    for channel, us in FIRST_CAMERA_US.items():
        offset_ms = stats.camera_offsets_ms[f"camera/{NAMES[channel]}"]
        assert offset_ms == pytest.approx((us * 1000 - first_start) / 1e6)
        assert 5.0 < offset_ms < 50.0
    assert stats.first_stamp_ns == first_start
    assert stats.last_stamp_ns == dataset.lidar_keys[-1]["timestamp"] * 1000


def test_rig_from_calibrated_sensor(keyframes: tuple[Path, Any]) -> None:
    rig = DriveReader(keyframes[0]).rig
    assert rig is not None
    assert set(rig.cameras) == set(NAMES.values())
    # vehicle = the ego frame's axes at LIDAR_TOP's origin; gnss = the ego origin.
    lidar = rig.transform("vehicle", "lidar")
    np.testing.assert_allclose(lidar.translation, 0.0, atol=1e-12)
    np.testing.assert_allclose(
        lidar.rotation, _rotation(LIDAR_CALIB["rotation"]).as_matrix(), atol=1e-9
    )
    assert rig.gnss_lever_arm_m is not None
    np.testing.assert_allclose(rig.gnss_lever_arm_m, -LIDAR_T, atol=1e-12)
    from tests.replay.datasets.nuscenes_fixture import _camera_calib

    for channel, name in NAMES.items():
        calib = _camera_calib(channel)
        fx, cx, cy = INTRINSICS[channel]
        cam = rig.cameras[name]
        np.testing.assert_allclose(cam.k, np.array([[fx, 0, cx], [0, fx, cy], [0, 0, 1]]))
        assert (cam.width, cam.height, cam.distortion) == (1600, 900, ())
        t = rig.transform("vehicle", f"camera/{name}")
        np.testing.assert_allclose(t.rotation, _rotation(calib["rotation"]).as_matrix(), atol=1e-9)
        np.testing.assert_allclose(t.translation, np.array(calib["translation"]) - LIDAR_T)
    # The front camera looks forward (its z along the vehicle's x), the back one backwards.
    assert rig.transform("vehicle", "camera/front").rotation[0, 2] > 0.99
    assert rig.transform("vehicle", "camera/back").rotation[0, 2] < -0.99


def test_gnss_fixes_from_ego_poses(dataset: Fixture, keyframes: tuple[Path, Any]) -> None:
    fixes = [r.message for r in _records(DriveReader(keyframes[0]), "gnss")]
    plane = LocalTangentPlane(*ORIGIN_ONENORTH, 0.0)
    yaw = _heading(_rotation(EGO_ROTATION))
    assert len(fixes) == len(dataset.lidar_all)  # every LIDAR_TOP ego pose, keyframe or not
    for fix, sd in zip(fixes, dataset.lidar_all, strict=True):
        assert isinstance(fix, GnssFix)
        assert fix.header.stamp_ns == sd["timestamp"] * 1000
        enu = plane.geodetic_to_enu(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
        np.testing.assert_allclose(enu, ego_translation(sd["timestamp"]), atol=1e-6)
        assert fix.heading_rad == pytest.approx(yaw, abs=1e-9)
        assert fix.velocity_enu_mps is not None
        np.testing.assert_allclose(
            np.array(fix.velocity_enu_mps), np.array(EGO_VELOCITY), atol=1e-6
        )


def _heading(rotation: Rotation) -> float:
    """The heading of the x axis in the x-y plane (the yaw the drive's documents use)."""
    r = rotation.as_matrix()
    return math.atan2(r[1, 0], r[0, 0])


def _instance(ann: dict[str, Any]) -> Any:
    return next(i for i in INSTANCES if token("instance", i.name) == ann["instance_token"])


@dataclass(frozen=True)
class _Box:
    center: np.ndarray
    orientation: Rotation
    velocity: np.ndarray


def _expected_box(dataset: Fixture, ann: dict[str, Any], stamp_us: int) -> _Box:
    """The annotation moved to `stamp_us` along the fixture's velocity (none for an object
    annotated once) and into the vehicle frame: the ego frame at `stamp_us` (the fixture's
    ego pose there), moved to LIDAR_TOP's origin."""
    inst = _instance(ann)
    sample = dataset.record("sample", ann["sample_token"])
    single = len(inst.samples) == 1
    velocity = np.zeros(3) if single else np.array(inst.velocity)
    ego_from_global = _rotation(EGO_ROTATION).inv()
    center = np.array(ann["translation"]) + velocity * (stamp_us - sample["timestamp"]) * 1e-6
    center = ego_from_global.apply(center - np.array(ego_translation(stamp_us))) - LIDAR_T
    orientation = ego_from_global * _rotation(ann["rotation"])
    return _Box(center, orientation, ego_from_global.apply(velocity))


def test_ground_truth_from_annotations(dataset: Fixture, keyframes: tuple[Path, Any]) -> None:
    reader = DriveReader(keyframes[0])
    docs = reader.ground_truth()
    sweeps = [r.message for r in _records(reader, "lidar/top")]
    labels = {
        "vehicle.car": "Car",
        "human.pedestrian.adult": "Pedestrian",
        "vehicle.bicycle": "Cyclist",  # with a rider
        "movable_object.trafficcone": "Traffic_cone",
        "animal": "unknown",
    }
    assert set(labels) == set(CATEGORIES)
    ids: dict[str, int] = {}
    for doc, sweep, sd in zip(docs, sweeps, dataset.lidar_keys, strict=True):
        assert doc["stamp_ns"] == sweep.header.stamp_ns
        assert doc["seq"] == sweep.header.seq
        assert doc["sample_token"] == sd["sample_token"]
        table = dataset.table("sample_annotation")
        anns = [a for a in table if a["sample_token"] == sd["sample_token"]]
        assert len(doc["boxes"]) == len(anns)
        for box, ann in zip(doc["boxes"], anns, strict=True):
            category = _instance(ann).category
            expected = _expected_box(dataset, ann, doc["stamp_ns"] // 1000)
            assert box["category"] == category
            assert box["label"] == labels[category]
            np.testing.assert_allclose(box["center"], expected.center, atol=1e-6)
            w, length, h = ann["size"]
            assert box["size"] == [length, w, h]
            assert box["yaw"] == pytest.approx(_heading(expected.orientation), abs=1e-9)
            np.testing.assert_allclose(box["velocity"], expected.velocity[:2], atol=1e-6)
            assert box["lidar_points"] == ann["num_lidar_pts"]
            level = int(ann["visibility_token"])
            assert box["camera_visible"] == {1: 0.2, 2: 0.5, 3: 0.7, 4: 0.9}[level]
            # One id per object over the drive.
            assert ids.setdefault(ann["instance_token"], box["id"]) == box["id"]
    assert len(set(ids.values())) == len(INSTANCES)
    # The readers of `perception eval --tracks` and the demo take the documents as they are.
    frames = read_drive_ground_truth(keyframes[0])
    assert [f.stamp_ns for f in frames] == [s.header.stamp_ns for s in sweeps]
    assert all(len(f.ids) == len(f.boxes) == len(f.velocities) for f in frames)


def test_all_sweeps(dataset: Fixture) -> None:
    out = dataset.root.parent / "sweeps.mcap"
    stats = import_nuscenes(
        dataset.root, out, version=VERSION, scene=SCENE, origin=None, progress=None, sweeps=True
    )
    assert stats.messages["lidar/top"] == len(dataset.lidar_all) == 22
    assert stats.messages["camera/front"] == len(dataset.camera_all["CAM_FRONT"]) == 7
    reader = DriveReader(out)
    sweeps = [r.message for r in _records(reader, "lidar/top")]
    # The first sweep of the scene has no previous one: its duration is the nominal 50 ms.
    assert sweeps[0].header.stamp_ns == (dataset.lidar_all[0]["timestamp"] - 50_000) * 1000
    truth = reader.ground_truth()
    keyframe_stamps = [
        s.header.stamp_ns
        for s, sd in zip(sweeps, dataset.lidar_all, strict=True)
        if sd["is_key_frame"]
    ]
    assert [d["stamp_ns"] for d in truth] == keyframe_stamps


def test_origin_given(dataset: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "o.mcap"
    origin = (48.0, 11.0, 500.0)
    import_nuscenes(dataset.root, out, version=VERSION, scene=SCENE, origin=origin, progress=None)
    fix = _records(DriveReader(out), "gnss")[0].message
    enu = LocalTangentPlane(*origin).geodetic_to_enu(
        fix.latitude_deg, fix.longitude_deg, fix.altitude_m
    )
    np.testing.assert_allclose(enu, ego_translation(dataset.lidar_all[0]["timestamp"]), atol=1e-6)


def _fails(root: Path, out: Path, **kwargs: Any) -> str:
    args: dict[str, Any] = {"version": VERSION, "scene": SCENE, "origin": None, "progress": None}
    with pytest.raises(ReplayError) as info:
        import_nuscenes(root, out, **(args | kwargs))
    assert not out.exists()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_input(dataset: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "bad.mcap"
    assert (
        _fails(tmp_path / "nope", out) == f"{tmp_path / 'nope'}: nuScenes DATAROOT does not exist"
    )
    err = _fails(dataset.root, out, version="v1.0-trainval")
    assert err.startswith(f"{dataset.root / 'v1.0-trainval'}: missing (the tables of version")
    assert err.endswith("versions here: v1.0-mini")
    err = _fails(dataset.root, out, scene="scene-9999")
    assert err.endswith(f"no scene 'scene-9999'; scenes available: {SCENE}, {OTHER_SCENE}")
    # scene-0103 is in Boston: its origin is known, but its sweep file is not there.
    missing = dataset.root / "samples/LIDAR_TOP/other.pcd.bin"
    assert _fails(dataset.root, out, scene=OTHER_SCENE).startswith(f"{missing}: cannot read")


def test_missing_table_and_files(tmp_path: Path) -> None:
    fx = write_nuscenes(tmp_path / "data", sweeps_files=False)
    out = tmp_path / "x.mcap"
    # Keyframes need no sweeps/ file; all sweeps do.
    import_nuscenes(fx.root, out, version=VERSION, scene=SCENE, origin=None, progress=None)
    out.unlink()
    sweep = fx.root / fx.lidar_all[0]["filename"]
    assert _fails(fx.root, out, sweeps=True).startswith(f"{sweep}: cannot read")
    (fx.root / fx.lidar_keys[0]["filename"]).write_bytes(b"\0" * 24)
    assert "is not a whole number of 20-byte points" in _fails(fx.root, out)
    (fx.root / VERSION / "sample_annotation.json").unlink()
    err = _fails(fx.root, out)
    assert err.startswith(f"{fx.root / VERSION}: missing table(s) sample_annotation.json")
    (fx.root / VERSION / "sample_annotation.json").write_text("[{")
    assert _fails(fx.root, out).startswith(f"{fx.root / VERSION / 'sample_annotation.json'}: ")


def test_an_ego_pose_far_off_names_the_pose(tmp_path: Path) -> None:
    """A pose 10,000 km off was the drive writer's WireError (a speed of 1e8 m/s), naming no
    record."""
    fx = write_nuscenes(tmp_path / "data")
    table = fx.root / VERSION / "ego_pose.json"
    poses = {r["token"]: r for r in json.loads(table.read_text())}
    far = poses[fx.lidar_keys[1]["ego_pose_token"]]
    far["translation"] = [1e7, 0.0, 0.0]
    table.write_text(json.dumps(list(poses.values())))
    err = _fails(fx.root, tmp_path / "x.mcap")
    assert re.fullmatch(
        r"ego_pose: the poses around timestamp (\d+) us \(a fix's velocity is its neighbours'\) "
        r"give no valid GNSS fix \(gnss: field 'fields\.velocity_enu_mps\[\d\]' is .*\)",
        err,
    )
    assert abs(int(err.split()[5]) - far["timestamp"]) <= 100_000  # within 0.1 s of it


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("rotation", [0.0, 0.0, 0.0, 0.0],
         "rotation: expected a quaternion (w, x, y, z), got [0.0, 0.0, 0.0, 0.0]"),
    ],
)  # fmt: skip
def test_a_bad_ego_pose_is_named_by_its_token(
    tmp_path: Path, key: str, value: list[float], problem: str
) -> None:
    """A rotation that is no quaternion was found only when interpolated, as "ego pose" with
    NaN in place of the record's values. (NaN values are refused with the tables' types:
    test_nuscenes_tables.)"""
    fx = write_nuscenes(tmp_path / "data")
    table = fx.root / VERSION / "ego_pose.json"
    poses = {r["token"]: r for r in json.loads(table.read_text())}
    token = fx.lidar_keys[1]["ego_pose_token"]
    poses[token][key] = value
    table.write_text(json.dumps(list(poses.values())))
    assert _fails(fx.root, tmp_path / "x.mcap").endswith(f"ego_pose {token}: {problem}")


def test_an_annotation_of_no_size_is_named(tmp_path: Path) -> None:
    """A negative size went into the ground truth without a word."""
    fx = write_nuscenes(tmp_path / "data")
    table = fx.root / VERSION / "sample_annotation.json"
    annotations = json.loads(table.read_text())
    annotations[0]["size"] = [-1.0, 4.0, 1.5]
    table.write_text(json.dumps(annotations))
    assert _fails(fx.root, tmp_path / "x.mcap").endswith(
        f"sample_annotation {annotations[0]['token']}: size [-1.0, 4.0, 1.5] is not three "
        "positive numbers"
    )


def test_a_sweep_beyond_the_drive_limits_names_its_file(tmp_path: Path) -> None:
    """It was the drive writer's "lidar/top: oversize sweep", naming no file."""
    fx = write_nuscenes(tmp_path / "data")
    path = fx.root / fx.lidar_keys[1]["filename"]
    point = np.array([10.0, 0.0, 0.0, 0.5, 0.0], np.float32)  # x, y, z, intensity, ring
    path.write_bytes(np.tile(point, (1_000_001, 1)).tobytes())
    assert _fails(fx.root, tmp_path / "x.mcap") == (
        f"{path}: cannot be stored in a drive (lidar/top: oversize sweep: 1000001 points, above "
        "the limit of 1000000)"
    )


def _edit_sample_data(fx: Fixture, token_: str, **changes: Any) -> None:
    table = fx.root / VERSION / "sample_data.json"
    rows = json.loads(table.read_text())
    next(r for r in rows if r["token"] == token_).update(changes)
    table.write_text(json.dumps(rows))


def test_links_out_of_the_scene_or_channel_are_refused(tmp_path: Path) -> None:
    """The first sweep's `prev` pointing into another scene: its one record (and ego pose)
    was taken as the whole scene's chain, a drive of 1 GNSS fix, without a word."""
    fx = write_nuscenes(tmp_path / "data")
    first = fx.lidar_all[0]["token"]
    other = next(r for r in fx.table("sample_data") if r["filename"].endswith("other.pcd.bin"))
    _edit_sample_data(fx, first, prev=other["token"])
    table = fx.root / VERSION / "sample_data.json"
    assert _fails(fx.root, tmp_path / "x.mcap") == (
        f"{table}: the LIDAR_TOP prev/next links lead to {other['token']}, of a sample of "
        "another scene"
    )
    camera = fx.camera_all["CAM_FRONT"][0]["token"]
    _edit_sample_data(fx, first, prev=camera)
    assert _fails(fx.root, tmp_path / "x.mcap") == (
        f"{table}: the LIDAR_TOP prev/next links lead to {camera}, of channel CAM_FRONT"
    )


def test_two_scenes_of_the_name_are_refused(tmp_path: Path) -> None:
    """The first of them was imported without a word."""
    fx = write_nuscenes(tmp_path / "data")
    table = fx.root / VERSION / "scene.json"
    scenes = json.loads(table.read_text())
    scenes[1]["name"] = SCENE
    table.write_text(json.dumps(scenes))
    assert _fails(fx.root, tmp_path / "x.mcap") == (
        f"{table}: 2 scenes named {SCENE!r} ({scenes[0]['token']}, {scenes[1]['token']})"
    )


def test_sample_files_that_are_pipes_or_of_another_size_are_named(tmp_path: Path) -> None:
    """A pipe for an image or sweep: the import waited for a writer for ever. A JPEG of
    another size than its record's went into the drive."""
    fx = write_nuscenes(tmp_path / "data")
    out = tmp_path / "x.mcap"
    for rec, what in ((fx.lidar_keys[1], "the lidar sweep"), (fx.camera_all["CAM_BACK"][0],
                                                            "the image")):  # fmt: skip
        path = fx.root / rec["filename"]
        data = path.read_bytes()
        path.unlink()
        os.mkfifo(path)
        assert _fails(fx.root, out) == f"{path}: {what} is not a regular file"
        path.unlink()
        path.write_bytes(data)
    rec = fx.camera_all["CAM_FRONT"][0]
    path = fx.root / rec["filename"]
    ok, jpeg = cv2.imencode(".jpg", np.zeros((90, 160, 3), np.uint8))
    assert ok
    path.write_bytes(jpeg.tobytes())
    assert _fails(fx.root, out) == (
        f"{path}: image is 160x90, its sample_data says {rec['width']}x{rec['height']}"
    )


def test_a_jpeg_cut_short_is_named(tmp_path: Path) -> None:
    """A CAM_FRONT image cut to 700 bytes keeps its header (its size): it was imported, and
    the node left it out when replayed."""
    fx = write_nuscenes(tmp_path / "data")
    path = fx.root / fx.camera_all["CAM_FRONT"][0]["filename"]
    path.write_bytes(path.read_bytes()[:700])
    assert _fails(fx.root, tmp_path / "x.mcap") == (
        f"{path}: JPEG image is cut short (no end-of-image marker after its image data)"
    )
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * 100)
    assert _fails(fx.root, tmp_path / "x.mcap") == (
        f"{path}: JPEG image gives no size in its header"
    )


@pytest.mark.parametrize("size", [82, 70, 0])
def test_a_sweep_file_not_of_whole_points_is_named_by_its_size(tmp_path: Path, size: int) -> None:
    """82 bytes (4 points and 2) were read as 4 points; 70 were said to be 68 (np.fromfile
    drops a partial float32)."""
    path = tmp_path / "s.pcd.bin"
    path.write_bytes((lidar_points(0).tobytes() + b"\1\2")[:size])
    with pytest.raises(ReplayError) as info:
        read_nuscenes_points(path)
    assert str(info.value) == (
        f"{path}: {size} bytes is not a whole number of 20-byte points (x, y, z, intensity, ring "
        "float32)"
    )


def test_points_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.pcd.bin"
    lidar_points(0).tofile(path)
    pts = read_nuscenes_points(path)
    assert pts.dtype == np.float32 and pts.shape == (4, 4)
    assert pts[2, 3] == pytest.approx(1.0)
    bad = lidar_points(0)
    bad[0, 0] = math.nan
    bad.tofile(path)
    with pytest.raises(ReplayError, match="non-finite"):
        read_nuscenes_points(path)


def test_training_pairs_each_keyframe_with_its_six_images(keyframes: tuple[Path, Any]) -> None:
    from replay.training.sources.drive import DriveSource

    source = DriveSource(keyframes[0])
    assert len(source) == 3
    sample = source[0]
    assert set(sample.cameras) == set(NAMES.values())
    assert sample.extra["deskewed"] is True  # the GNSS fixes give the ego poses
    assert {b.label for b in sample.boxes} == {"Car", "Pedestrian"}
    ignored: Any = sample.extra["ignore"]
    assert {b.label for b in ignored} == {"Traffic_cone"}
