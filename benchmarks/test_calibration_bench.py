"""The calibration code on the hot paths: the camera projection (the fusion stage's view cull,
the monitor's frames) and the monitor's window score (its search scores hundreds).

Run: `python -m pytest benchmarks/test_calibration_bench.py --benchmark-enable`. Each pair is
the code as it runs and the way it ran before (OpenCV's `projectPoints`; the window scored frame
by frame), each checked to give the same result before it is timed. Figures in
benchmarks/RESULTS.md (2026-12-04, sixth session): `project` of 20k points 0.35 against 6.4 ms;
a window score over 25 frames 0.35 against 1.16 ms.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration import PinholeCamera
from calibration.pooled import FrameEvidence, PooledEvidence, histograms
from replay.synth.world import CAMERA_NAME, synth_rig

POINTS = 20_000
FRAMES = 25
FRAME_POINTS = 1_650
BINS = 24


@pytest.fixture(scope="module")
def camera_and_points() -> tuple[PinholeCamera, np.ndarray]:
    """The synthetic rig's camera (plumb-bob distortion) and 20k points in front of it, about
    what a sweep puts near its view."""
    camera = synth_rig().cameras[CAMERA_NAME]
    assert isinstance(camera, PinholeCamera) and camera.has_distortion
    rng = np.random.default_rng(0)
    depth = rng.uniform(3.0, 60.0, POINTS)
    points = np.column_stack(
        [rng.uniform(-0.9, 0.9, POINTS) * depth, rng.uniform(-0.3, 0.3, POINTS) * depth, depth]
    )
    return camera, points


def _opencv(camera: PinholeCamera, points: np.ndarray) -> np.ndarray:
    uv, _ = cv2.projectPoints(
        points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), camera.k, np.asarray(camera.distortion)
    )
    return np.asarray(uv).reshape(-1, 2)


def test_projection_20k_points(benchmark, camera_and_points) -> None:
    camera, points = camera_and_points
    uv, _ = camera.project(points)
    finite = np.isfinite(uv[:, 0])
    assert finite.all()
    np.testing.assert_allclose(uv, _opencv(camera, points), rtol=0, atol=1e-9)
    benchmark(camera.project, points)


def test_projection_20k_points_opencv(benchmark, camera_and_points) -> None:
    camera, points = camera_and_points
    benchmark(_opencv, camera, points)


@pytest.fixture(scope="module")
def window() -> tuple[list[FrameEvidence], np.ndarray]:
    """25 frames of 1,650 points in view (41k, as the monitor's window holds on the rich world)
    with bands of the synthetic image's width, and their shifts to a common centre."""
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(FRAMES):
        rows, row0 = int(rng.integers(150, 250)), int(rng.integers(0, 100))
        uv = np.column_stack(
            [rng.uniform(0, 1242, FRAME_POINTS), rng.uniform(row0, row0 + rows, FRAME_POINTS)]
        )
        frames.append(
            FrameEvidence(
                uv=uv.astype(np.float32),
                jacobian=rng.normal(0.0, 2.0, (6, FRAME_POINTS, 2)).astype(np.float32),
                level=rng.integers(0, BINS, FRAME_POINTS),
                grey=rng.integers(0, 256, (rows, 1242)).astype(np.uint8),
                row0=row0,
                width=1242,
                origin=np.zeros(6),
                fold=0,
            )
        )
    return frames, rng.uniform(-1.0, 1.0, (FRAMES, 6))


def _frame_by_frame(
    frames: list[FrameEvidence], shifts: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    total = np.zeros(BINS * BINS, np.int64)
    for frame, shift in zip(frames, shifts, strict=True):
        total += histograms(frame, (offset + shift)[None], BINS)[0]
    return total


def test_window_score_pooled(benchmark, window) -> None:
    frames, shifts = window
    pooled = PooledEvidence(frames, shifts, BINS)
    offset = np.array([0.5, -1.0, 0.25, 0.0, 1.0, -0.5])
    expected = _frame_by_frame(frames, shifts, offset)
    got = pooled.histogram(offset)
    # float32 sums in another order: a few points of 41k cross a bin's edge (more on these
    # random grey levels than on a real, smooth image: 0.1% against 0.02%).
    assert got.sum() == pytest.approx(expected.sum(), abs=10)
    assert np.abs(got - expected).sum() <= 0.005 * expected.sum()
    benchmark(pooled.histogram, offset)


def test_window_score_frame_by_frame(benchmark, window) -> None:
    frames, shifts = window
    offset = np.array([0.5, -1.0, 0.25, 0.0, 1.0, -0.5])
    benchmark(_frame_by_frame, frames, shifts, offset)
