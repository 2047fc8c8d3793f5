"""SyntheticSource: samples straight from the synthetic world, deterministic per (seed, index),
points deskewed into the vehicle frame at the sweep stamp, the camera undistorted and placed at
its own stamp."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration import PinholeCamera
from replay.evaluation import ReferenceBox, box_corners
from replay.synth.world import (
    CAMERA_NAME,
    START_NS,
    make_world,
    render_camera,
    synth_rig,
)
from replay.training.samples import TRAINING_CLASSES, BoxLabel, TrainingSample
from replay.training.sources import SyntheticSource

SEED = 7


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource([SEED, SEED + 1], seconds=1.0)


def _inside(points: np.ndarray, box: BoxLabel, margin: float) -> np.ndarray:
    """Mask of the points inside `box` grown by `margin` (m) on every side."""
    d = points[:, :3].astype(np.float64) - np.array(box.center)
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    half = np.array(box.size) / 2 + margin
    return (np.abs(along) <= half[0]) & (np.abs(across) <= half[1]) & (np.abs(d[:, 2]) <= half[2])


def _camera_stamp_s(sample: TrainingSample) -> float:
    stamps = sample.extra["camera_stamps_ns"]
    assert isinstance(stamps, dict)
    return (int(stamps[CAMERA_NAME]) - START_NS) * 1e-9


def test_length_describe_and_names(source: SyntheticSource) -> None:
    assert len(source) == 20
    assert source.describe() == "synthetic seeds 7-8, 1.0 s: 20 sweeps"
    assert source[0].name == "synth:seed=7:seq=0"
    assert source[13].name == "synth:seed=8:seq=3"
    assert source[-1].name == "synth:seed=8:seq=9"
    assert source[13].stamp_ns == START_NS + 3 * 100_000_000
    with pytest.raises(IndexError):
        source[20]


def test_same_seed_and_index_give_identical_arrays(source: SyntheticSource) -> None:
    a = source[13]
    fresh = SyntheticSource([SEED, SEED + 1], seconds=1.0)
    fresh[4]  # another sample first: the order of access must not matter
    b = fresh[13]
    assert np.array_equal(a.points, b.points)
    assert np.array_equal(a.cameras[CAMERA_NAME].image, b.cameras[CAMERA_NAME].image)
    assert np.array_equal(
        a.cameras[CAMERA_NAME].camera_from_vehicle, b.cameras[CAMERA_NAME].camera_from_vehicle
    )
    assert a.boxes == b.boxes
    # Another sweep of the same seed has its own noise; the world is built once per seed.
    assert not np.array_equal(source[12].points[:1000], a.points[:1000])
    assert source.world(SEED + 1) is source.world(SEED + 1)


def test_boxes_are_the_worlds_ground_truth(source: SyntheticSource) -> None:
    sample = source[3]
    world = make_world(np.random.Generator(np.random.PCG64(SEED)), 1.0)
    truth = {b["id"]: b for b in world.boxes_in_vehicle(0.3)}
    assert sample.boxes and {b.label for b in sample.boxes} <= set(TRAINING_CLASSES)
    assert {b.label for b in sample.boxes} == set(TRAINING_CLASSES)  # the world has all three
    for box in sample.boxes:
        ref = truth[box.track_id]
        assert box.label == ref["label"]
        assert box.center == pytest.approx(tuple(ref["center"]), abs=1e-9)
        assert box.velocity == pytest.approx(tuple(ref["velocity"]), abs=1e-9)
        assert math.hypot(*box.center[:2]) < 100.0
        assert 0.0 <= box.visibility <= 1.0 and box.lidar_points >= 0
    assert sum(b.visibility > 0.5 for b in sample.boxes) >= 2
    assert sum(b.lidar_points > 20 for b in sample.boxes) >= 3


def test_points_are_deskewed_into_the_vehicle_frame_at_the_sweep_stamp(
    source: SyntheticSource,
) -> None:
    """The returns on a parked car lie in its box at the sweep stamp; without the deskew those
    of the sweep's late columns would be up to 0.6 m (0.1 s at 6 m/s) off."""
    sample = source[5]
    parked = [b for b in sample.boxes if b.label == "Car" and math.hypot(*b.velocity) < 1e-6]
    parked = [b for b in parked if b.lidar_points >= 30]
    assert len(parked) >= 2
    for box in parked:
        inside = int(_inside(sample.points, box, 0.08).sum())
        assert inside >= 0.97 * box.lidar_points, (box, inside)


def test_camera_is_undistorted_and_placed_at_its_stamp(source: SyntheticSource) -> None:
    sample = source[6]
    view = sample.cameras[CAMERA_NAME]
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    assert isinstance(view.model, PinholeCamera) and not view.model.has_distortion
    assert np.array_equal(view.model.k, camera.k)
    assert (view.model.width, view.model.height) == (camera.width, camera.height)
    # The image is the undistorted one: much closer to an ideal pinhole render than to the
    # distorted camera image.
    world = make_world(np.random.Generator(np.random.PCG64(SEED)), 1.0)
    tc = _camera_stamp_s(sample)
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    ideal, boxes_2d = render_camera(world, tc, camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
    distorted, _ = render_camera(world, tc, camera, vehicle_from_camera)  # type: ignore[arg-type]
    image = view.image.astype(np.int16)
    diff_ideal = np.abs(image - ideal).mean()
    diff_distorted = np.abs(image - distorted).mean()
    assert diff_ideal < 0.5 * diff_distorted, (diff_ideal, diff_distorted)
    # A parked car's box at the sweep stamp, projected with the sample's transform, lands where
    # the camera sees it at its own stamp (its box at that time in the vehicle frame then,
    # through the rig alone); the rig's transform alone misses by pixels. Its centre falls in
    # the rendered 2D box.
    now = {b["id"]: b for b in world.boxes_in_vehicle(tc)}
    by_id = {b.ident: b for b in boxes_2d}
    parked = [
        b
        for b in sample.boxes
        if math.hypot(*b.velocity) < 1e-6 and b.visibility > 0.5 and b.track_id in by_id
    ]
    assert parked
    rig_only = rig.transform("camera/front", "vehicle").matrix

    def pixels(box: ReferenceBox, matrix: np.ndarray) -> np.ndarray:
        cam = box_corners(box) @ matrix[:3, :3].T + matrix[:3, 3]
        uv, depth = view.model.project(cam)
        assert np.all(depth > 0)
        return uv

    for box in parked:
        ref = now[box.track_id]
        seen = pixels(ReferenceBox(box.label, tuple(ref["center"]), box.size, ref["yaw"]), rig_only)
        at_sweep = ReferenceBox(box.label, box.center, box.size, box.yaw)
        assert np.abs(pixels(at_sweep, view.camera_from_vehicle) - seen).max() < 1e-3
        assert np.abs(pixels(at_sweep, rig_only) - seen).max() > 3.0
        centre = np.array(box.center) @ view.camera_from_vehicle[:3, :3].T
        u, v = view.model.project(centre + view.camera_from_vehicle[:3, 3])[0][0]
        b2 = by_id[box.track_id]
        assert b2.x1 <= u <= b2.x2 and b2.y1 <= v <= b2.y2
