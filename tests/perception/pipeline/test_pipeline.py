from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pymap3d
import pytest

from perception.config import CameraModelConfig, SyncConfig
from perception.msgs.types import GnssFix, Header
from perception.pipeline import Pipeline, PipelineConfig
from perception.sync import Bundler
from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder


@pytest.fixture(scope="module")
def pipeline(yolox_path: Path) -> Pipeline:
    return Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))


def _bundle(kitti_dir: Path, fix: GnssFix | None):
    sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
    if fix is not None:
        sync.add(fix, receive_ns=0)
    for msg in KittiObjectFolder(kitti_dir).frame_messages(0, 0):
        sync.add(msg, receive_ns=0)
    (bundle,) = sync.poll(0)
    return bundle


def test_step_is_deterministic(pipeline: Pipeline, kitti_dir: Path) -> None:
    a = pipeline.step(_bundle(kitti_dir, None), 0)
    b = pipeline.step(_bundle(kitti_dir, None), 0)
    assert a.detections == b.detections
    assert a.detections and all(d.latitude_deg is None for d in a.detections)


def test_parallel_branches_change_nothing_but_the_timings(
    pipeline: Pipeline, kitti_dir: Path, yolox_path: Path
) -> None:
    """The lidar branch on its own thread gives the detections of the branches in turn, on
    every KITTI frame; only the timings say which ran: `branch_wait` with parallel branches."""
    assert pipeline.config.parallel_branches
    serial = Pipeline.from_config(
        CameraModelConfig(path=str(yolox_path), kind="yolox"),
        config=PipelineConfig(parallel_branches=False),
    )
    folder = KittiObjectFolder(kitti_dir)
    for index in range(len(folder.frames)):
        sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
        for msg in folder.frame_messages(index, 0):
            sync.add(msg, receive_ns=0)
        (bundle,) = sync.poll(0)
        a, b = pipeline.step(bundle, 0), serial.step(bundle, 0)
        assert a.detections == b.detections
        assert "branch_wait" in a.timings_ns and "branch_wait" not in b.timings_ns
        assert a.timings_ns["lidar_encoder"] > 0 and b.timings_ns["lidar_encoder"] > 0
        assert pipeline.last_frame is not None and serial.last_frame is not None
        assert np.array_equal(pipeline.last_frame.points, serial.last_frame.points)


def test_global_position_from_gnss_heading_and_lever_arm(pipeline, kitti_dir: Path) -> None:
    lat, lon, alt = 49.0150038, 8.4342971, 116.43
    heading = math.pi / 2  # vehicle x axis points north
    fix = GnssFix(Header("gnss", 0, 0, "gnss"), lat, lon, alt, heading_rad=heading)
    bundle = _bundle(kitti_dir, fix)
    dl = pipeline.step(bundle, 0)
    (ped,) = [d for d in dl.detections if d.label == "Pedestrian"]
    arm = bundle.rig.gnss_lever_arm_m
    assert arm is not None
    # Facing north: vehicle x -> north, vehicle y (left) -> west.
    rel = np.asarray(ped.center) - arm
    east, north, up = -rel[1], rel[0], rel[2]
    exp_lat, exp_lon, _ = pymap3d.enu2geodetic(east, north, up, lat, lon, alt)
    assert ped.latitude_deg == pytest.approx(exp_lat, abs=1e-8)
    assert ped.longitude_deg == pytest.approx(exp_lon, abs=1e-8)
    assert ped.latitude_deg > lat  # 8.9 m ahead = north


def test_every_detection_placed_with_branches_in_parallel_or_in_turn(
    pipeline: Pipeline, kitti_dir: Path, yolox_path: Path
) -> None:
    """The camera boxes' detections are placed while the lidar branch runs, the lidar-only
    ones after: every detection has its own position (as pymap3d gives it), and the
    detections are those of the branches in turn, which place them all at the end."""
    lat, lon, alt = 49.0150038, 8.4342971, 116.43
    fix = GnssFix(Header("gnss", 0, 0, "gnss"), lat, lon, alt, heading_rad=0.4)
    serial = Pipeline.from_config(
        CameraModelConfig(path=str(yolox_path), kind="yolox"),
        config=PipelineConfig(parallel_branches=False),
    )
    bundle = _bundle(kitti_dir, fix)
    dl = pipeline.step(bundle, 0)
    assert dl.detections == serial.step(bundle, 0).detections
    assert {d.sources for d in dl.detections} == {("camera", "lidar"), ("lidar",)}
    arm = np.asarray(bundle.rig.gnss_lever_arm_m)
    for d in dl.detections:
        x, y, z = np.asarray(d.center) - arm
        east = x * math.cos(0.4) - y * math.sin(0.4)
        north = x * math.sin(0.4) + y * math.cos(0.4)
        exp_lat, exp_lon, _ = pymap3d.enu2geodetic(east, north, z, lat, lon, alt)
        assert d.latitude_deg == pytest.approx(exp_lat, abs=1e-8)
        assert d.longitude_deg == pytest.approx(exp_lon, abs=1e-8)


def test_sweep_is_deskewed_with_gnss_motion(pipeline: Pipeline, kitti_dir: Path) -> None:
    from dataclasses import replace

    from calibration import LocalTangentPlane
    from perception.msgs.types import LidarSweep

    origin = LocalTangentPlane(49.0, 8.4, 100.0)
    sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
    for k in range(-1, 3):  # 20 m/s along the vehicle x axis (heading 0 = east)
        lat, lon, alt = origin.enu_to_geodetic([20.0 * 0.1 * k, 0.0, 0.0])
        fix = GnssFix(
            Header("gnss", k, k * 100_000_000, "gnss"),
            float(lat),
            float(lon),
            float(alt),
            velocity_enu_mps=(20.0, 0.0, 0.0),
            heading_rad=0.0,
        )
        sync.add(fix, receive_ns=0)
    rig_msg, cam, sweep = KittiObjectFolder(kitti_dir).frame_messages(1, 0)
    assert isinstance(sweep, LidarSweep)
    n = sweep.points.shape[0]
    offsets = np.linspace(0, 99_000_000, n).astype(np.int64)
    for msg in (rig_msg, cam, replace(sweep, point_time_offsets_ns=offsets)):
        sync.add(msg, receive_ns=0)
    (bundle,) = sync.poll(0)
    assert bundle.ego_pose is not None and bundle.ego_pose_end is not None
    unbounded = Pipeline(pipeline.detector, PipelineConfig(max_range_m=1e3), pipeline.fusion)
    points = unbounded._points_in_vehicle(bundle)
    assert points.shape == sweep.points.shape
    # A point measured t after the sweep start was seen from 20 t further forward.
    shift = points[:, 0] - sweep.points[:, 0]
    np.testing.assert_allclose(shift, 20.0 * offsets * 1e-9, atol=0.02)
    # The range cut, after the deskew: the points beyond it go, the others stay in order.
    reach = np.sqrt(np.einsum("ij,ij->i", points[:, :3], points[:, :3]))
    # Halfway between two ranges a millimetre apart or more: no point sits on the limit.
    ranked = np.sort(reach)
    k = len(ranked) // 2 + int(np.argmax(np.diff(ranked[len(ranked) // 2 :]) > 1e-3))
    limit = float(ranked[k] + ranked[k + 1]) / 2
    cut = Pipeline(pipeline.detector, PipelineConfig(max_range_m=limit), pipeline.fusion)
    np.testing.assert_array_equal(cut._points_in_vehicle(bundle), points[reach <= limit])


def test_vehicle_motion_to_the_camera_stamp() -> None:
    from calibration import RigidTransform
    from perception.pipeline.deskew import deskew_points, vehicle_motion

    def _vehicle_motion(twist: tuple[tuple[float, float, float], float], dt: int) -> RigidTransform:
        return RigidTransform(vehicle_motion(twist, dt))

    # 6 m/s forward, 62 ms later: a point 10 m ahead is 0.372 m nearer.
    straight = _vehicle_motion(((6.0, 0.0, 0.0), 0.0), 62_000_000)
    np.testing.assert_allclose(straight.apply([[10.0, 0.0, 0.0]]), [[9.628, 0.0, 0.0]], atol=1e-9)
    # Turning: the transform equals moving the points themselves.
    twist = ((8.0, 0.5, 0.0), 0.3)
    pts = np.array([[10.0, 2.0, -1.0], [-5.0, 7.0, 0.5]])
    moved = deskew_points(pts, np.zeros(2, np.int64), *twist, reference_offset_ns=50_000_000)
    np.testing.assert_allclose(
        _vehicle_motion(twist, 50_000_000).apply(pts), moved[:, :3], atol=1e-5
    )


def test_torch_backend_gives_the_onnxruntime_detections(kitti_dir: Path, yolox_path: Path) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    from engines.settings import EngineSettings
    from perception.config import CameraModelConfig
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.offline import run_messages

    runs = []
    for backend in ("onnxruntime", "torch"):
        engines = EngineSettings(backend=backend, device="cpu")
        pipeline = Pipeline.from_config(CameraModelConfig(), yolox_path, engines)
        assert pipeline.fusion.engine.describe().backend == backend
        assert pipeline.lidar_objects.encoder.engine.describe().backend == backend
        folder = KittiObjectFolder(kitti_dir)
        runs.append(list(run_messages(folder.messages(), pipeline)))
    for ort_list, torch_list in zip(*runs, strict=True):
        assert len(ort_list.detections) == len(torch_list.detections)
        for a, b in zip(ort_list.detections, torch_list.detections, strict=True):
            assert (a.label, a.sources) == (b.label, b.sources)
            assert np.allclose(a.center, b.center, atol=1e-3)
            assert np.allclose(a.size, b.size, atol=1e-3)


def test_warm_up_makes_every_fusion_bucket_and_changes_no_output(
    kitti_dir: Path, yolox_path: Path
) -> None:
    """A bucket's engine made mid-drive stalls that frame (150-190 ms here, a dropped sweep at
    10 Hz): the node's warm-up makes all of them before the first sweep."""
    cold = Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))
    warm = Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))
    buckets = warm.fusion._buckets
    assert buckets is not None and len(buckets.sizes) > 2
    assert buckets.loaded != buckets.sizes
    warm.warm_up()
    assert buckets.loaded == buckets.sizes == warm.fusion.shapes
    bundle = _bundle(kitti_dir, None)
    assert warm.step(bundle, 0).detections == cold.step(bundle, 0).detections


def test_an_image_of_another_size_than_the_rig_camera_is_left_out(
    pipeline: Pipeline, kitti_dir: Path
) -> None:
    """Its boxes would go through the rig camera's intrinsics to wrong places: the camera is
    unfit for that sweep (degraded, its boxes unused), the lidar's objects stay."""
    from dataclasses import replace

    import cv2

    bundle = _bundle(kitti_dir, None)
    frame = bundle.cameras[CAMERA_STREAM]
    assert frame.image is not None
    h, w = frame.image.shape[:2]
    smaller = replace(frame, image=np.ascontiguousarray(cv2.resize(frame.image, (w - 18, h - 5))))
    dl = pipeline.step(replace(bundle, cameras={CAMERA_STREAM: smaller}), 0)
    assert dl.degraded == (CAMERA_STREAM,) and not dl.valid
    assert dl.detections and all(d.sources == ("lidar",) for d in dl.detections)
    assert any(d.sources != ("lidar",) for d in pipeline.step(bundle, 0).detections)


def test_a_frame_of_a_camera_the_rig_does_not_have_is_left_out_and_said(
    pipeline: Pipeline, kitti_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A camera topic of the config that names no camera of the rig (the rig file of another
    vehicle, a renamed camera): its frames cannot be projected, and every DetectionList went
    out valid and whole without them. The stream is degraded and said, the lidar's objects
    stay."""
    from dataclasses import replace

    bundle = _bundle(kitti_dir, None)
    frame = bundle.cameras[CAMERA_STREAM]
    header = replace(frame.header, stream="camera/left", frame_id="camera/left")
    elsewhere = replace(bundle, cameras={"camera/left": replace(frame, header=header)})
    dl = pipeline.step(elsewhere, 0)
    assert dl.degraded == ("camera/left",) and not dl.valid
    assert dl.detections and all(d.sources == ("lidar",) for d in dl.detections)
    assert "camera/left: no camera of the rig is named for its frames" in caplog.text
    assert "the rig has cam0, cam1, cam3, front); left out" in caplog.text
