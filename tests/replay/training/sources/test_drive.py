"""DriveSource: a recorded synthetic drive (real MCAP, through the node's Bundler) gives the
ground truth of its channel, the same boxes the synthetic world gives, and cameras placed so
that visible objects project into the image."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from calibration import PinholeCamera, RigidTransform
from perception.msgs.types import Header, LidarSweep
from replay.drive import DriveWriter
from replay.synth.world import (
    CAMERA_NAME,
    START_NS,
    SynthWorld,
    ground_truth_path,
    make_world,
    read_drive_ground_truth,
    read_ground_truth,
    render_camera,
    synth_rig,
)
from replay.training.sources import DriveSource, SyntheticSource

SEED = 2
SECONDS = 1.0


@pytest.fixture(scope="module")
def drive(synth_drive: Callable[[int, float], Path]) -> Path:
    return synth_drive(SEED, SECONDS)


@pytest.fixture(scope="module")
def source(drive: Path) -> DriveSource:
    return DriveSource(drive)


def test_every_sweep_is_a_sample_with_its_camera(source: DriveSource, drive: Path) -> None:
    assert len(source) == 10
    assert source.describe() == f"drive {drive.name}: 10 sweeps"
    for i in (0, 5, -1):
        sample = source[i]
        assert set(sample.cameras) == {CAMERA_NAME}
        assert "missing_cameras" not in sample.extra and sample.extra["deskewed"] is True
        assert sample.points.shape[0] > 20_000
    with pytest.raises(IndexError):
        source[10]


def test_boxes_equal_the_synthetic_ground_truth(source: DriveSource, drive: Path) -> None:
    sidecar = {f.stamp_ns: f for f in read_ground_truth(ground_truth_path(drive))}
    assert read_drive_ground_truth(drive) == list(sidecar.values())
    synthetic = SyntheticSource([SEED], SECONDS)
    for i in range(len(source)):
        sample = source[i]
        truth = sidecar[sample.stamp_ns]
        assert len(sample.boxes) == len(truth.boxes) > 0
        for box, ref, visible, hits in zip(
            sample.boxes, truth.boxes, truth.camera_visible, truth.lidar_points, strict=True
        ):
            assert (box.label, box.center, box.size, box.yaw) == (
                ref.label,
                ref.center,
                ref.size,
                ref.yaw,
            )
            assert (box.visibility, box.lidar_points) == (visible, hits)
        # The world's boxes straight from the synthetic source (rounded to 1e-5 in the drive).
        direct = synthetic[i]
        assert direct.stamp_ns == sample.stamp_ns
        assert [b.track_id for b in direct.boxes] == [b.track_id for b in sample.boxes]
        for a, b in zip(direct.boxes, sample.boxes, strict=True):
            assert (*a.center, *a.size, a.yaw, *a.velocity) == pytest.approx(
                (*b.center, *b.size, b.yaw, *b.velocity), abs=1e-4
            )


def test_visible_box_centres_project_into_the_image(source: DriveSource) -> None:
    """Each camera-visible object wholly in the frame (its rendered 2D box clear of the image
    border): its box centre, projected with the sample's camera, lands in the image and in
    that 2D box (the renderer's, at the camera's stamp)."""
    rig = synth_rig()
    rig_camera = rig.cameras[CAMERA_NAME]
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    world = make_world(np.random.Generator(np.random.PCG64(SEED)), SECONDS)
    width, height = rig_camera.width, rig_camera.height
    projected = 0
    for i in range(len(source)):
        sample = source[i]
        view = sample.cameras[CAMERA_NAME]
        assert isinstance(view.model, PinholeCamera) and not view.model.has_distortion
        assert np.array_equal(view.model.k, rig_camera.k)
        assert view.image.shape == (height, width, 3)
        stamps = sample.extra["camera_stamps_ns"]
        assert isinstance(stamps, dict)
        tc = (stamps[CAMERA_NAME] - START_NS) * 1e-9
        _, rendered = render_camera(world, tc, rig_camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
        boxes_2d = {b.ident: b for b in rendered}
        camera_from_vehicle = RigidTransform(view.camera_from_vehicle)
        for box in sample.boxes:
            b2 = boxes_2d.get(box.track_id)
            if box.visibility < 0.3 or b2 is None:
                continue
            if b2.x1 < 1 or b2.y1 < 1 or b2.x2 > width - 1 or b2.y2 > height - 1:
                continue  # partly out of the frame: its centre may be too
            uv, depth = view.model.project(camera_from_vehicle.apply(np.array([box.center])))
            assert depth[0] > 0 and view.model.in_image(uv)[0], (sample.name, box)
            (u, v), margin = uv[0], 2.0
            assert b2.x1 - margin <= u <= b2.x2 + margin, (sample.name, box, b2)
            assert b2.y1 - margin <= v <= b2.y2 + margin, (sample.name, box, b2)
            projected += 1
    assert projected >= 20


def test_points_match_the_synthetic_source(source: DriveSource) -> None:
    """Deskewed with the GNSS twist, the drive's returns on parked cars lie in their boxes as
    tightly as the synthetic source's (exactly deskewed) do."""
    sample = source[4]
    parked = [
        b
        for b in sample.boxes
        if b.label == "Car" and math.hypot(*b.velocity) < 1e-6 and b.lidar_points >= 30
    ]
    assert parked
    for box in parked:
        d = sample.points[:, :3].astype(np.float64) - np.array(box.center)
        c, s = math.cos(box.yaw), math.sin(box.yaw)
        along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        half = np.array(box.size) / 2 + 0.1
        inside = (np.abs(along) <= half[0]) & (np.abs(across) <= half[1])
        inside &= np.abs(d[:, 2]) <= half[2]
        assert int(inside.sum()) >= 0.95 * box.lidar_points, box


def test_random_access_is_deterministic(drive: Path, source: DriveSource) -> None:
    again = DriveSource(drive)
    a, b = source[7], again[7]
    assert np.array_equal(a.points, b.points)
    assert np.array_equal(a.cameras[CAMERA_NAME].image, b.cameras[CAMERA_NAME].image)
    assert a.boxes == b.boxes


def test_a_drive_without_ground_truth_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.mcap"
    with DriveWriter(path, rig=synth_rig()) as w:
        points = np.zeros((4, 4), np.float32)
        w.write(LidarSweep(Header("lidar", 0, 1_000, "lidar"), points), 2_000)
    with pytest.raises(ValueError, match=r"plain\.mcap: no ground-truth channel") as err:
        DriveSource(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"missing\.mcap: no such file"):
        DriveSource(tmp_path / "missing.mcap")


def test_camera_transform_carries_the_ego_motion_to_the_camera_stamp(source: DriveSource) -> None:
    """`camera_from_vehicle` (from the GNSS twist, as the pipeline) against the world's exact
    motion between the sweep stamp and the camera's stamp: within 2 cm (rotation within the
    GNSS heading noise), where the rig alone is off by the ~0.37 m driven in between."""
    rig_only = synth_rig().transform("camera/front", "vehicle").matrix

    def road_from_vehicle(t: float) -> np.ndarray:
        x, y, yaw = (float(v) for v in SynthWorld((), 1.0).ego_pose(t))  # the straight road
        return RigidTransform.from_yaw(yaw, (x, y, 0.0)).matrix

    for i in (1, 5, 9):
        sample = source[i]
        stamps = sample.extra["camera_stamps_ns"]
        assert isinstance(stamps, dict)
        t0 = (sample.stamp_ns - START_NS) * 1e-9
        tc = (stamps[CAMERA_NAME] - START_NS) * 1e-9
        exact = rig_only @ np.linalg.inv(road_from_vehicle(tc)) @ road_from_vehicle(t0)
        got = sample.cameras[CAMERA_NAME].camera_from_vehicle
        assert np.abs(got[:3, 3] - exact[:3, 3]).max() < 0.02
        assert np.abs(got[:3, :3] - exact[:3, :3]).max() < 5e-3  # GNSS heading noise
        assert np.abs(rig_only[:3, 3] - exact[:3, 3]).max() > 0.3
