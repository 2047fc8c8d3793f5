from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.transforms import RigidTransform
from perception.config import GroundConfig
from perception.errors import ConfigError
from perception.pipeline.ground import GroundPlane, estimate_ground


def test_ground_plane_on_a_synthetic_slope() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform([-30.0, -30.0], [30.0, 30.0], size=(5000, 2))
    z = -1.6 + 0.02 * xy[:, 0] - 0.01 * xy[:, 1] + rng.normal(0.0, 0.02, len(xy))
    clutter = np.c_[rng.uniform(5, 20, (800, 2)), rng.uniform(-1.2, 0.5, 800)]
    points = np.r_[np.c_[xy, z], clutter]
    points = np.c_[points, np.zeros(len(points))].astype(np.float32)
    plane = estimate_ground(points, GroundConfig())
    expected = np.array([-0.02, 0.01, 1.0]) / np.linalg.norm([-0.02, 0.01, 1.0])
    angle = math.degrees(math.acos(min(1.0, float(np.dot(plane.normal, expected)))))
    assert angle < 0.3
    assert abs(plane.z_at([[0.0, 0.0]])[0] + 1.6) < 0.02
    on_plane = plane.height_above(np.c_[xy, z])
    assert np.median(np.abs(on_plane)) < 0.03
    assert estimate_ground(points, GroundConfig()) == plane  # seeded: same input, same plane


def test_the_planes_are_scored_in_bounded_memory_at_the_configs_limits() -> None:
    """The most iterations the config takes (100,000) scored against 3,000 candidates was a
    2.4 GB temporary, and against a whole sweep's (`ransac_max_points` unbounded) a MemoryError
    on every sweep. Here 2,000 planes x 20,000 candidates (320 MB at once before): the same
    plane, in a few tens of MB."""
    import tracemalloc

    rng = np.random.default_rng(3)
    xy = rng.uniform(-30.0, 30.0, size=(20_000, 2))
    z = -1.7 + 0.01 * xy[:, 0] + rng.normal(0.0, 0.02, len(xy))
    points = np.c_[xy, z, np.zeros(len(xy))].astype(np.float32)
    config = GroundConfig(ransac_iterations=2000, ransac_max_points=100_000)
    tracemalloc.start()
    try:
        plane = estimate_ground(points, config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100e6
    assert abs(plane.z_at([[0.0, 0.0]])[0] + 1.7) < 0.02


def test_ground_candidates_are_picked_in_float64_whatever_the_points_dtype() -> None:
    """A float32 sweep fits the plane its float64 copy fits, to the bit: its returns are
    compared with the height band's float64 thresholds as float64. Returns stored at the
    float32 nearest a threshold lie beyond it and are no candidates: the plane is the one
    without them (compared in float32 they would be, and the candidates' sampling would
    change: checked, it fails)."""
    config = GroundConfig()
    rng = np.random.default_rng(3)
    xy = rng.uniform(-30.0, 30.0, (6000, 2))
    z = -1.73 + 0.01 * xy[:, 0] + rng.normal(0.0, 0.02, len(xy))
    edges = []
    for threshold in (
        config.ground_prior_z_m + config.ground_band_above_m,
        config.ground_prior_z_m - config.ground_band_below_m,
    ):
        # The default thresholds' float32 both round outward, beyond the band.
        stored = np.float32(threshold)
        assert (float(stored) > threshold) == (threshold > config.ground_prior_z_m)
        edges.append(np.c_[rng.uniform(-20.0, 20.0, (2000, 2)), np.full(2000, stored)])
    points = np.c_[np.r_[np.c_[xy, z], *edges], np.zeros(10000)].astype(np.float32)
    plane = estimate_ground(points, config)
    assert plane == estimate_ground(points.astype(np.float64), config)
    assert plane == estimate_ground(points[:6000], config)


def test_ground_falls_back_to_the_prior_with_too_few_points() -> None:
    points = np.array([[5.0, 0.0, -1.7, 0.0], [6.0, 1.0, -1.7, 0.0]], dtype=np.float32)
    assert estimate_ground(points, GroundConfig()) == GroundPlane.horizontal(-1.73)
    empty = np.zeros((0, 4), np.float32)
    config = GroundConfig(ground_prior_z_m=-2.0)
    assert estimate_ground(empty, config).z_at([[3.0, 4.0]])[0] == pytest.approx(-2.0)


def test_ground_plane_normalises_and_validates() -> None:
    plane = GroundPlane((0.0, 0.0, 2.0), 3.0)
    assert plane.normal == (0.0, 0.0, 1.0) and plane.offset == pytest.approx(1.5)
    assert plane.height_above([[0.0, 0.0, 0.5]])[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="normal"):
        GroundPlane((0.0, 0.0, -1.0), 1.7)
    with pytest.raises(ValueError, match="finite"):
        GroundPlane((0.0, float("nan"), 1.0), 1.7)
    with pytest.raises(ValueError, match="points"):
        plane.height_above(np.zeros((3, 2)))


def test_a_plane_moved_to_another_frame_holds_its_points_moved() -> None:
    """`GroundPlane.moved`: the plane in a target frame contains the source plane's points
    moved by the transform (a vehicle that drove on and turned a little)."""
    plane = GroundPlane((0.02, -0.01, 1.0), 1.7)
    rng = np.random.default_rng(2)
    xy = rng.uniform(-20.0, 20.0, (50, 2))
    on = np.c_[xy, plane.z_at(xy)]
    motion = RigidTransform.from_yaw(0.05, (1.2, 0.3, 0.02), pitch=0.01, roll=-0.02)
    moved = plane.moved(motion)
    np.testing.assert_allclose(moved.height_above(motion.apply(on)), 0.0, atol=1e-9)
    above = on + np.asarray(plane.normal) * 0.4
    np.testing.assert_allclose(moved.height_above(motion.apply(above)), 0.4, atol=1e-9)
    assert plane.moved(RigidTransform.identity()) == plane


def test_real_frame_ground(kitti_dir) -> None:
    from replay.datasets.kitti_object import read_kitti_scan

    points = read_kitti_scan(kitti_dir / "velodyne_reduced" / "000003.bin")
    ground = estimate_ground(points)
    assert ground.normal[2] > math.cos(math.radians(5))
    assert abs(ground.z_at([[5.0, 0.0]])[0] + 1.75) < 0.15


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"ransac_max_points: must be >= 3"):
        GroundConfig(ransac_max_points=2)
