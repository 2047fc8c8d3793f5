"""Edge-alignment evidence (calibration.alignment): the edge map, depth edges along beams, and
the accumulated score of candidate extrinsics on a scene whose image is drawn from its points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration import RigidTransform
from calibration.alignment import EdgeAlignment, depth_edges, edge_map
from calibration.camera import PinholeCamera
from calibration.errors import CalibrationError

CAMERA = PinholeCamera(np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]), (), 640, 480)
# Lidar (x forward, y left, z up) to camera (x right, y down, z forward), same origin.
CAMERA_FROM_LIDAR = RigidTransform.from_rotvec([0.0, 0.0, 0.0]) @ RigidTransform(
    np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
)


def test_edge_map_is_one_on_edges_and_decays_away() -> None:
    image = np.zeros((100, 200), np.uint8)
    image[:, 100:] = 200
    emap = edge_map(image)
    assert emap.shape == (100, 200) and emap.dtype == np.float32
    assert emap[50, 99] == pytest.approx(1.0) or emap[50, 100] == pytest.approx(1.0)
    assert emap[50, 110] < emap[50, 104] < emap[50, 101]
    assert emap[50, 20] < 1e-4
    assert not edge_map(np.full((50, 60, 3), 128, np.uint8)).any()  # flat: no edges


def _beam_scan(
    elevations_deg: list[float] | np.ndarray, boxes: list[tuple[float, float, float]]
) -> np.ndarray:
    """A wall 20 m away, seen by beams at `elevations_deg` every 0.2 degrees of azimuth
    between -30 and +30, with boxes in front of it: (range m, half-width deg, azimuth deg)."""
    rows = []
    for elevation in elevations_deg:
        for azimuth in np.arange(-30.0, 30.0, 0.2):
            rng = min([r for r, half, centre in boxes if abs(azimuth - centre) <= half] + [20.0])
            e, a = math.radians(elevation), math.radians(azimuth)
            rows.append(
                (
                    rng * math.cos(e) * math.cos(a),
                    rng * math.cos(e) * math.sin(a),
                    rng * math.sin(e),
                )
            )
    return np.array(rows)


def test_depth_edges_are_the_near_side_of_range_steps() -> None:
    scan = _beam_scan([-1.0, -0.5, 0.0], [(10.0, 5.0, 0.0)])
    edges = depth_edges(scan)
    # Per beam the two box columns next to the wall; the wall side is farther, not an edge.
    assert len(edges.points) == 6
    ranges = np.linalg.norm(edges.points, axis=1)
    np.testing.assert_allclose(ranges, 10.0, atol=1e-9)
    np.testing.assert_allclose(edges.weights, math.sqrt(10.0), atol=1e-9)
    azimuths = np.degrees(np.arctan2(edges.points[:, 1], edges.points[:, 0]))
    np.testing.assert_allclose(np.abs(azimuths), 5.0, atol=0.21)  # the box's two sides
    assert len(depth_edges(_beam_scan([0.0], [])).points) == 0  # no step
    with pytest.raises(CalibrationError, match=r"points must be N x 3 or more"):
        depth_edges(np.zeros((4, 2)))


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A scan of a wall with three boxes in front, and the camera image drawn from it: the
    boxes bright on a dark wall, so their silhouettes are the image's edges."""
    points = _beam_scan(
        np.arange(-8.0, 4.0, 0.4), [(8.0, 4.0, -12.0), (12.0, 3.0, 6.0), (6.0, 2.0, 18.0)]
    )
    image = np.full((CAMERA.height, CAMERA.width), 40, np.uint8)
    near = points[np.linalg.norm(points, axis=1) < 19.0]
    uv, _ = CAMERA.project(CAMERA_FROM_LIDAR.apply(near))
    keep = CAMERA.in_image(uv)
    u, v = uv[keep, 0].astype(int), uv[keep, 1].astype(int)
    for du in range(-2, 3):
        for dv in range(-2, 3):
            image[np.clip(v + dv, 0, CAMERA.height - 1), np.clip(u + du, 0, CAMERA.width - 1)] = 220
    return points, image


def test_true_extrinsic_scores_best() -> None:
    points, image = _scene()
    deg = math.radians(1.0)
    # Corrections in the lidar frame. The boxes' silhouettes are vertical edges: a yaw or a
    # sideways shift moves the depth edges off them, a pitch slides them along (no evidence).
    candidates = [
        RigidTransform.identity(),
        RigidTransform.from_rotvec([0.0, 0.0, deg]),
        RigidTransform.from_rotvec([0.0, 0.0, -deg]),
        RigidTransform.from_rotvec([0.0, 0.0, 0.0], [0.0, 0.3, 0.0]),
        RigidTransform.from_rotvec([0.0, deg, 0.0]),
    ]
    evidence = EdgeAlignment(candidates)
    assert evidence.frames == 0 and not evidence.scores().any()
    edges = depth_edges(points)
    evidence.add(edges, image, CAMERA, CAMERA_FROM_LIDAR)
    evidence.add(edges, image, CAMERA, CAMERA_FROM_LIDAR)
    scores = evidence.scores()
    assert evidence.frames == 2
    assert scores[0] > 0.6
    assert all(scores[0] > s + 0.3 for s in scores[1:4]), scores
    assert scores[4] == pytest.approx(scores[0], abs=0.02)
    with pytest.raises(CalibrationError, match=r"image is 10x10, camera expects 640x480"):
        evidence.add(edges, np.zeros((10, 10), np.uint8), CAMERA, CAMERA_FROM_LIDAR)
    with pytest.raises(CalibrationError, match=r"no candidate extrinsics"):
        EdgeAlignment([])
