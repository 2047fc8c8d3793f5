"""Camera models: projection with distortion, visibility, back-projection, undistortion maps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import CalibrationError, FisheyeCamera, PinholeCamera, load_rig


def _grid_points(rng: np.random.Generator, n: int, half_angle_deg: float) -> np.ndarray:
    """Points in front of the camera within `half_angle_deg` of the optical axis, 1-50 m."""
    theta = np.radians(half_angle_deg) * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(-np.pi, np.pi, n)
    depth = rng.uniform(1.0, 50.0, n)
    r = np.tan(theta)
    return np.column_stack([r * np.cos(phi) * depth, r * np.sin(phi) * depth, depth])


def _pjlab_camera(data_dir: Path) -> PinholeCamera:
    cam = load_rig(data_dir / "lidar_camera_calib_pjlab").cameras["center"]
    assert isinstance(cam, PinholeCamera)
    return cam


def test_plumb_bob_projection_matches_opencv(data_dir: Path) -> None:
    cam = _pjlab_camera(data_dir)
    pts = _grid_points(np.random.default_rng(1), 2000, 30.0)
    uv, depth = cam.project(pts)
    ref, _ = cv2.projectPoints(
        pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), cam.k, np.asarray(cam.distortion)
    )
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-9)
    np.testing.assert_array_equal(depth, pts[:, 2])


@pytest.mark.parametrize(
    "distortion",
    [
        (-0.05, 0.02, 0.0005, -0.0003),
        (-0.28, 0.07, 0.001, -0.002, 0.01),
        (0.4, -0.1, 0.0008, 0.0004, 0.02, 0.7, -0.05, 0.03),
    ],
    ids=["four", "five", "rational"],
)
def test_every_plumb_bob_form_projects_as_opencv_does(distortion: tuple[float, ...]) -> None:
    """The projection is OpenCV's model in numpy (cv2.projectPoints is 40 times slower on a
    sweep): four, five and eight coefficients (the rational radial term) agree with it, the
    skew of K ignored as OpenCV ignores it."""
    k = np.array([[720.0, 0.4, 621.0], [0.0, 715.0, 187.5], [0.0, 0.0, 1.0]])
    cam = PinholeCamera(k, distortion, 1242, 375)
    pts = _grid_points(np.random.default_rng(7), 5000, 40.0)
    uv, _ = cam.project(pts)
    ref, _ = cv2.projectPoints(
        pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, np.asarray(distortion)
    )
    finite = np.isfinite(uv[:, 0])
    assert finite.sum() > 4000
    np.testing.assert_allclose(uv[finite], ref.reshape(-1, 2)[finite], rtol=0, atol=1e-9)


def test_a_mixed_batch_projects_as_each_point_alone() -> None:
    """Points behind the camera, beyond the distortion's monotonic range and in view, in one
    batch: each gets what it gets alone (NaN, NaN, OpenCV's pixel)."""
    k = np.array([[984.2439, 0, 690.0], [0, 980.8141, 233.1966], [0, 0, 1]])
    cam = PinholeCamera(
        k, (-0.3728755, 0.2037299, 0.002219027, 0.001383707, -0.07233722), 1392, 512
    )
    pts = np.array([[0.3, 0.1, 1.0], [0.0, 0.0, -5.0], [4.0, 0.0, 1.0], [-2.0, 1.0, 9.0]])
    uv, depth = cam.project(pts)
    alone = np.array([cam.project(p[None])[0][0] for p in pts])
    np.testing.assert_array_equal(uv, alone)
    np.testing.assert_array_equal(depth, pts[:, 2])
    assert np.isnan(uv[1:3]).all() and np.isfinite(uv[[0, 3]]).all()
    ref, _ = cv2.projectPoints(
        pts[[0, 3]].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, np.asarray(cam.distortion)
    )
    np.testing.assert_allclose(uv[[0, 3]], ref.reshape(-1, 2), rtol=0, atol=1e-9)


def test_back_projection_round_trip(data_dir: Path) -> None:
    cam = _pjlab_camera(data_dir)
    pts = _grid_points(np.random.default_rng(2), 2000, 25.0)
    uv, depth, visible = cam.visible(pts)
    back = cam.back_project(uv[visible], depth[visible])
    assert visible.sum() > 500
    assert np.max(np.linalg.norm(back - pts[visible], axis=1)) < 1e-6  # metres
    ideal = PinholeCamera(cam.k, (), cam.width, cam.height)
    uv2, d2 = ideal.project(pts)
    np.testing.assert_allclose(ideal.back_project(uv2, d2), pts, atol=1e-9)


def test_fisheye_round_trip_and_opencv_agreement() -> None:
    k = np.array([[380.0, 0.0, 640.0], [0.0, 380.0, 400.0], [0.0, 0.0, 1.0]])
    cam = FisheyeCamera(k, (0.05, -0.01, 0.002, -0.0005), 1280, 800)
    pts = _grid_points(np.random.default_rng(3), 3000, 80.0)  # 160 degree field of view
    uv, depth = cam.project(pts)
    ref, _ = cv2.fisheye.projectPoints(
        pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, np.asarray(cam.distortion)
    )
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-9)
    back = cam.back_project(uv, depth)
    assert np.max(np.linalg.norm(back - pts, axis=1) / depth) < 1e-7
    # An equidistant lens maps 80 degrees off-axis to about f * theta from the centre.
    edge = cam.project(np.array([[np.tan(np.radians(80)), 0.0, 1.0]]))[0][0]
    assert abs(edge[0] - 640 - 380 * np.radians(80)) < 0.15 * 380


def test_points_behind_or_outside_are_not_visible() -> None:
    cam = PinholeCamera(np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]), (), 640, 480)
    pts = np.array([[0, 0, 5.0], [0, 0, -5.0], [10.0, 0, 1.0], [0, 0, 0.0]])
    uv, _depth, visible = cam.visible(pts)
    assert visible.tolist() == [True, False, False, False]
    assert np.isnan(uv[1]).all() and np.isnan(uv[3]).all()


def test_distortion_does_not_fold_far_points_into_the_image() -> None:
    # KITTI raw camera 0 (unrectified): the radial polynomial turns back beyond ~62 degrees.
    k = np.array([[984.2439, 0, 690.0], [0, 980.8141, 233.1966], [0, 0, 1]])
    cam = PinholeCamera(
        k, (-0.3728755, 0.2037299, 0.002219027, 0.001383707, -0.07233722), 1392, 512
    )
    uv, _ = cam.project(np.array([[4.0, 0.0, 1.0], [0.3, 0.0, 1.0]]))
    assert np.isnan(uv[0]).all()
    assert cam.in_image(uv).tolist() == [False, True]


def test_undistortion_maps_are_cached_and_undistort(data_dir: Path) -> None:
    cam = _pjlab_camera(data_dir)
    mx, my = cam.undistort_maps()
    assert cam.undistort_maps()[0] is mx
    assert mx.shape == (cam.height, cam.width)
    # A distorted pixel, remapped, lands at the ideal projection of the same ray.
    pts = np.array([[3.0, 1.5, 10.0]])
    uv_dist = cam.project(pts)[0][0]
    ideal = pts[0] @ cam.k.T
    u, v = ideal[:2] / ideal[2]
    assert abs(mx[round(v), round(u)] - uv_dist[0]) < 1.0
    assert abs(my[round(v), round(u)] - uv_dist[1]) < 1.0
    image = np.zeros((cam.height, cam.width, 3), np.uint8)
    assert cam.undistort_image(image).shape == image.shape
    with pytest.raises(CalibrationError, match=r"image is 10x10, camera is 1920x1200"):
        cam.undistort_image(np.zeros((10, 10, 3), np.uint8))


def test_the_undistorted_model_projects_into_the_undistorted_image() -> None:
    k = np.array([[700.0, 0, 620], [0, 700, 180], [0, 0, 1]])
    distorted = PinholeCamera(k, (-0.2, 0.05, 0.001, -0.001, 0.0), 1240, 370)
    model = distorted.undistorted()
    assert isinstance(model, PinholeCamera) and not model.has_distortion
    np.testing.assert_array_equal(model.k, k)
    assert (model.width, model.height) == (1240, 370)
    # A pixel of the distorted image lands where the undistorted model projects its ray.
    ray = np.array([[3.0, -0.5, 10.0]])
    uv_distorted, _ = distorted.project(ray)
    mx, my = distorted.undistort_maps()
    uv_model, _ = model.project(ray)
    u, v = (round(float(c)) for c in uv_model[0])
    np.testing.assert_allclose([mx[v, u], my[v, u]], uv_distorted[0], atol=1.0)
    plain = PinholeCamera(k, (), 1240, 370)
    assert plain.undistorted() is plain


def _sweep(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points all around the camera (a spinning lidar's sweep in the camera frame), 0.5-80 m."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * rng.uniform(0.5, 80.0, (n, 1))


@pytest.mark.parametrize(
    "camera",
    [
        PinholeCamera(np.array([[720.0, 0, 621], [0, 720.0, 187], [0, 0, 1]]), (), 1242, 375),
        # KITTI raw camera 0: its corners lie near where the radial polynomial turns back.
        PinholeCamera(
            np.array([[984.2439, 0, 690.0], [0, 980.8141, 233.1966], [0, 0, 1]]),
            (-0.3728755, 0.2037299, 0.002219027, 0.001383707, -0.07233722),
            1392,
            512,
        ),
        # Corners beyond the polynomial's monotonic range: the cull must not bound the view.
        PinholeCamera(
            np.array([[300.0, 0, 640], [0, 300.0, 400], [0, 0, 1]]),
            (-0.45, 0.0, 0.0, 0.0),
            1280,
            800,
        ),
        FisheyeCamera(
            np.array([[380.0, 0.0, 640.0], [0.0, 380.0, 400.0], [0.0, 0.0, 1.0]]),
            (0.05, -0.01, 0.002, -0.0005),
            1280,
            800,
        ),
    ],
    ids=["pinhole", "kitti-raw", "folding", "fisheye"],
)
def test_in_view_is_what_visible_finds(camera: PinholeCamera | FisheyeCamera) -> None:
    rng = np.random.default_rng(7)
    pts = _sweep(rng, 200_000)
    # And points on the image's border, where a cull that is too tight would show.
    h, w = camera.height, camera.width
    border = np.concatenate(
        [
            np.column_stack([rng.uniform(-1, w, 2000), rng.choice([-0.6, -0.4, h - 0.6], 2000)]),
            np.column_stack([rng.choice([-0.6, -0.4, w - 0.6], 2000), rng.uniform(-1, h, 2000)]),
        ]
    )
    inside = camera.in_image(border)
    depth = rng.uniform(1.0, 50.0, len(border))
    on_border = camera.back_project(border[inside], depth[inside])
    pts = np.concatenate([pts, on_border])
    index, uv = camera.in_view(pts)
    all_uv, _, mask = camera.visible(pts)
    assert np.array_equal(index, np.flatnonzero(mask))
    assert np.array_equal(uv, all_uv[mask])
    assert 100 < mask.sum() < len(pts) // 2
    # The points as rows (`RigidTransform.apply_rows(...).T`, as the pipeline gives them): the
    # very same indices and pixels.
    rows_index, rows_uv = camera.in_view(np.ascontiguousarray(pts.T).T)
    assert np.array_equal(rows_index, index) and np.array_equal(rows_uv, uv)


def test_a_skew_beyond_the_focal_length_is_refused() -> None:
    """A skew of 1e300 made a camera that saw nothing: a check found no lidar point in its
    image and said so with exit 0. A small skew, as some calibrations have, is kept."""
    k = np.array([[700.0, 0.5, 600.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]])
    assert PinholeCamera(k, (), 1242, 375).k[0, 1] == 0.5
    k[0, 1] = 1e300
    with pytest.raises(CalibrationError) as info:
        PinholeCamera(k, (), 1242, 375, context="rig: cameras.front")
    assert str(info.value) == (
        "rig: cameras.front.k: skew s=1e+300 px is beyond fx=700 px (pixel axes more than 45 "
        "degrees from square): no camera is so"
    )
