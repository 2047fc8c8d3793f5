"""Lidar-only objects: the rectangle fit, cluster rules, and quality on the synthetic drive's
ground truth (360 degrees, where no camera looks) and on the real KITTI frames."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perception.config import NodeConfig, SyncConfig
from perception.errors import ConfigError
from perception.msgs.types import Detection3D, DetectionList
from perception.pipeline.ground import GroundPlane
from perception.pipeline.lidar_objects import (
    UNKNOWN_LABEL,
    LidarClusters,
    LidarObjectConfig,
    LidarObjects,
    fit_rectangle,
    fit_rectangles,
)
from replay.evaluation import ReferenceBox

GROUND = GroundPlane.horizontal(-1.73)


def _faces(box, faces, rng, *, spacing=0.05, noise=0.02):
    """Points along the given faces (0: +x, 1: +y, 2: -x, 3: -y in the box frame) of
    box = (center, length, width, yaw)."""
    center, length, width, yaw = box
    hl, hw = length / 2, width / 2
    ends = {
        0: ((hl, -hw), (hl, hw)),
        1: ((hl, hw), (-hl, hw)),
        2: ((-hl, hw), (-hl, -hw)),
        3: ((-hl, -hw), (hl, -hw)),
    }
    local = []
    for f in faces:
        a, b = np.array(ends[f][0]), np.array(ends[f][1])
        n = max(2, int(np.linalg.norm(b - a) / spacing))
        local.append(a + np.linspace(0, 1, n)[:, None] * (b - a))
    xy = np.concatenate(local) + rng.normal(0, noise, (sum(len(p) for p in local), 2))
    c, s = math.cos(yaw), math.sin(yaw)
    return xy @ np.array([[c, s], [-s, c]]) + np.asarray(center)


def _yaw_error(a: float, b: float) -> float:
    d = (a - b) % math.pi
    return math.degrees(min(d, math.pi - d))


@settings(max_examples=60, deadline=None)
@given(
    yaw=st.floats(-math.pi, math.pi),
    length=st.floats(3.5, 5.0),
    width=st.floats(1.5, 2.0),
    corner=st.integers(0, 3),
)
def test_fit_rectangle_recovers_an_l_shape(yaw, length, width, corner):
    rng = np.random.default_rng(0)
    xy = _faces(((12.0, -4.0), length, width, yaw), (corner, (corner + 1) % 4), rng)
    (cx, cy), fl, fw, fyaw = fit_rectangle(xy)
    assert _yaw_error(fyaw, yaw) < 3.0
    assert fl == pytest.approx(length, abs=0.15) and fw == pytest.approx(width, abs=0.15)
    assert math.hypot(cx - 12.0, cy + 4.0) < 0.15
    assert -math.pi / 2 < fyaw <= math.pi / 2


def _reference_fit(xy: np.ndarray) -> tuple[float, float, float, float, float]:
    """The closeness criterion on one set, spelt out: the best of the 2-degree headings, then
    of the quarter degrees within 2 degrees of it; (cx, cy, length, width, yaw)."""

    def best(headings: np.ndarray) -> float:
        score = np.zeros(len(headings))
        for u in (np.stack([np.cos(headings), np.sin(headings)]),
                  np.stack([-np.sin(headings), np.cos(headings)])):  # fmt: skip
            coord = xy @ u
            d = np.minimum(coord - coord.min(axis=0), coord.max(axis=0) - coord)
            score += (1.0 / np.maximum(d, 0.01)).sum(axis=0)
        return float(headings[int(np.argmax(score))])

    theta = best(np.deg2rad(np.arange(0.0, 90.0, 2.0)))
    theta = best(theta + np.deg2rad(np.arange(-2.0, 2.01, 0.25)))
    a = xy @ np.array([math.cos(theta), math.sin(theta)])
    b = xy @ np.array([-math.sin(theta), math.cos(theta)])
    mid_a, mid_b = (a.max() + a.min()) / 2, (b.max() + b.min()) / 2
    cx = mid_a * math.cos(theta) - mid_b * math.sin(theta)
    cy = mid_a * math.sin(theta) + mid_b * math.cos(theta)
    la, lb = a.max() - a.min(), b.max() - b.min()
    yaw = theta if la >= lb else theta + math.pi / 2
    return cx, cy, max(la, lb), min(la, lb), (yaw + math.pi / 2) % math.pi - math.pi / 2


def test_fit_rectangles_fits_each_set_as_alone():
    """Many sets at once (tens of clusters, in groups that split between them; single points;
    400-point faces) give each set's own rectangle, as the criterion spelt out does."""
    rng = np.random.default_rng(21)
    sets = []
    for k in range(60):
        box = ((rng.uniform(-30, 30), rng.uniform(-30, 30)), rng.uniform(0.3, 6.0),
               rng.uniform(0.3, 2.5), rng.uniform(-math.pi, math.pi))  # fmt: skip
        faces = (0, 1) if k % 3 else (2,)
        xy = _faces(box, faces, rng)[: int(rng.integers(1, 400))]
        sets.append(xy if k % 7 else xy[:1])
    assert sum(len(xy) for xy in sets) > 2500
    fits = fit_rectangles(sets)
    assert fits == [fit_rectangle(xy) for xy in sets]
    for xy, ((cx, cy), length, width, yaw) in zip(sets, fits, strict=True):
        ref = _reference_fit(xy)
        assert (cx, cy, length, width) == pytest.approx(ref[:4], abs=1e-9)
        assert abs(math.remainder(yaw - ref[4], math.pi)) < 1e-9
    assert fit_rectangles([]) == []


def test_fit_rectangle_of_one_face_is_thin_along_it():
    xy = _faces(((8.0, 3.0), 4.0, 1.8, 0.4), (1,), np.random.default_rng(1))
    _, length, width, yaw = fit_rectangle(xy)
    assert length == pytest.approx(4.0, abs=0.1) and width < 0.15
    assert _yaw_error(yaw, 0.4) < 3.0


def _column(xy, z_lo, z_hi, step=0.1):
    """Points stacked from z_lo to z_hi (heights above GROUND) at each xy."""
    zs = np.arange(z_lo, z_hi + 1e-9, step)
    pts = [(x, y, z - 1.73, 0.5) for x, y in xy for z in zs]
    return np.array(pts, dtype=np.float32)


def _ground_points():
    g = np.mgrid[-30:30:0.5, -30:30:0.5].reshape(2, -1).T
    return np.column_stack([g, np.full(len(g), -1.73), np.full(len(g), 0.2)]).astype(np.float32)


@pytest.fixture(scope="module")
def lidar_objects() -> LidarObjects:
    return LidarObjects()


def _detect(lidar_objects, points, fused=()):
    obstacle, bev = lidar_objects.encode(points, GROUND)
    return lidar_objects.detect(obstacle, bev, GROUND, fused)


def test_a_box_on_the_ground_is_one_unknown_object(lidar_objects):
    rng = np.random.default_rng(2)
    car = _column(_faces(((-10.0, 6.0), 4.2, 1.7, 0.3), (2, 3), rng), 0.3, 1.5)
    dets = _detect(lidar_objects, np.concatenate([_ground_points(), car]))
    assert len(dets) == 1
    d = dets[0]
    assert d.label == UNKNOWN_LABEL and d.sources == ("lidar",)
    assert math.hypot(d.center[0] + 10.0, d.center[1] - 6.0) < 0.2
    assert d.size[0] == pytest.approx(4.2, abs=0.2) and d.size[2] == pytest.approx(1.5, abs=0.05)
    # The box stands on the ground.
    assert d.center[2] - d.size[2] / 2 == pytest.approx(-1.73, abs=0.01)
    assert 0 < d.score <= LidarObjectConfig().max_score


def test_walls_overhangs_and_low_returns_are_not_objects(lidar_objects):
    rng = np.random.default_rng(3)
    wall = _column(_faces(((15.0, 0.0), 20.0, 0.3, 1.2), (1,), rng), 0.3, 2.5)
    crown = _column(_faces(((-5.0, -8.0), 3.0, 3.0, 0.0), (0, 1, 2, 3), rng), 2.0, 2.9)
    grass = _column(_faces(((5.0, 8.0), 3.0, 2.0, 0.0), (0, 1, 2, 3), rng), 0.3, 0.45, step=0.05)
    assert _detect(lidar_objects, np.concatenate([_ground_points(), wall, crown, grass])) == []


def test_a_cluster_a_fused_detection_explains_is_dropped(lidar_objects):
    rng = np.random.default_rng(4)
    car = _column(_faces(((20.0, -3.0), 4.0, 1.7, 0.0), (2, 3), rng), 0.3, 1.5)
    pole = _column([(12.0, 4.0), (12.05, 4.0), (12.0, 4.05)], 0.3, 2.5)
    points = np.concatenate([_ground_points(), car, pole])
    fused = Detection3D(
        "car", 0.8, (20.6, -2.7, -0.95), (3.9, 1.6, 1.56), 0.05, ("camera", "lidar")
    )
    dets = _detect(lidar_objects, points, [fused])
    assert len(dets) == 1 and math.hypot(dets[0].center[0] - 12.0, dets[0].center[1] - 4.0) < 0.2


def _explained_by_one(xy: np.ndarray, fused: list[Detection3D], cfg: LidarObjectConfig) -> bool:
    """At least `explained_fraction` of the points in one footprint grown by the margin, each
    point tested in the footprint's own axes."""
    for d in fused:
        c, s = math.cos(d.yaw), math.sin(d.yaw)
        along = (xy[:, 0] - d.center[0]) * c + (xy[:, 1] - d.center[1]) * s
        across = -(xy[:, 0] - d.center[0]) * s + (xy[:, 1] - d.center[1]) * c
        inside = (np.abs(along) <= d.size[0] / 2 + cfg.explained_margin_m) & (
            np.abs(across) <= d.size[1] / 2 + cfg.explained_margin_m
        )
        if inside.mean() >= cfg.explained_fraction:
            return True
    return False


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9])
def test_select_keeps_exactly_the_clusters_no_fused_detection_explains(fraction):
    """Among many clusters and fused detections, those near each other and those far apart,
    `select` keeps the objects of the clusters no footprint explains, in order, whether or not
    the clusters' bounding boxes let it skip a footprint."""
    cfg = LidarObjectConfig(explained_fraction=fraction)
    objects = LidarObjects.__new__(LidarObjects)
    objects.config = cfg
    rng = np.random.default_rng(9)
    kept = dropped = 0
    for _ in range(40):
        fused = []
        for _ in range(int(rng.integers(0, 12))):
            x, y = rng.uniform(-15.0, 15.0, 2)
            size = (float(rng.uniform(0.5, 6.0)), float(rng.uniform(0.5, 2.5)), 1.5)
            yaw = float(rng.uniform(-math.pi, math.pi))
            fused.append(Detection3D("car", 0.8, (float(x), float(y), 0.0), size, yaw))
        # Clusters anywhere, and some on the fused detections (tight or spread beyond them).
        centres = [rng.uniform(-15.0, 15.0, 2) for _ in range(int(rng.integers(0, 20)))]
        centres += [np.array(d.center[:2]) for d in fused if rng.random() < 0.7]
        members, dets = [], []
        for centre in centres:
            spread = rng.uniform(0.1, 3.0, 2)
            members.append(centre + rng.normal(0.0, 1.0, (int(rng.integers(1, 60)), 2)) * spread)
            dets.append(Detection3D(UNKNOWN_LABEL, 0.4, (*centre, 0.0), (1.0, 1.0, 1.0), 0.0))
        clusters = LidarClusters(
            tuple(members),
            tuple(dets),
            np.array([m.min(axis=0) for m in members]).reshape(-1, 2),
            np.array([m.max(axis=0) for m in members]).reshape(-1, 2),
        )
        expected = [
            d
            for m, d in zip(members, dets, strict=True)
            if not (fused and _explained_by_one(m, fused, cfg))
        ]
        assert objects.select(clusters, fused) == expected
        kept += len(expected)
        dropped += len(dets) - len(expected)
    # A fraction of 0 is explained by any footprint: only scenes without one keep clusters.
    assert dropped > 20 and (kept > 20 or fraction == 0.0)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="min_height_m"):
        LidarObjectConfig(min_height_m=2.0, max_height_m=1.0)
    with pytest.raises(ConfigError, match="min_points"):
        LidarObjectConfig(min_points=1)


# -- the synthetic drive: ground truth all around the vehicle ----------------------------------


def _on_box(det: Detection3D, box: ReferenceBox, margin: float) -> bool:
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    dx, dy = det.center[0] - box.center[0], det.center[1] - box.center[1]
    return (
        abs(c * dx + s * dy) <= box.size[0] / 2 + margin
        and abs(-s * dx + c * dy) <= box.size[1] / 2 + margin
    )


@pytest.fixture(scope="module")
def synthetic_run(synth_drive):
    from engines.camera.detector import CameraDetector
    from engines.onnxruntime_backend import OnnxRuntimeEngine
    from perception.pipeline import Pipeline
    from replay.drive import DriveReader
    from replay.offline import run_records
    from replay.synth.demo import SYNTH_DETECTOR_PATH
    from replay.synth.world import (
        CAMERA_OFFSET_NS,
        CAMERA_STREAM,
        ground_truth_path,
        read_ground_truth,
    )

    drive = synth_drive(3, 3.0)
    reader = DriveReader(drive)
    detector = CameraDetector(
        OnnxRuntimeEngine(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.15
    )
    pipeline = Pipeline(detector)
    sync = SyncConfig(
        camera_offsets_ms={CAMERA_STREAM: CAMERA_OFFSET_NS / 1e6},
        camera_windows_ms={CAMERA_STREAM: 20.0},
    )
    lists: list[DetectionList] = list(
        run_records(
            reader.messages(), pipeline, replace(NodeConfig(), sync=sync), default_rig=reader.rig
        )
    )
    truth = {f.stamp_ns: f for f in read_ground_truth(ground_truth_path(drive))}
    return lists, truth, reader.rig


def test_lidar_only_objects_lie_on_real_objects(synthetic_run):
    lists, truth, _ = synthetic_run
    lidar_only = [
        (d, truth[dl.header.stamp_ns])
        for dl in lists
        for d in dl.detections
        if d.sources == ("lidar",)
    ]
    assert len(lidar_only) > 100
    on_object = sum(any(_on_box(d, b, 0.5) for b in frame.boxes) for d, frame in lidar_only)
    # The synthetic world is objects on a flat ground: anything else is a false object.
    assert on_object / len(lidar_only) >= 0.93, f"{on_object}/{len(lidar_only)}"


def test_objects_outside_the_camera_are_found(synthetic_run):
    lists, truth, rig = synthetic_run
    camera = rig.cameras["front"]
    camera_from_vehicle = rig.transform("camera/front", "vehicle")
    seen = found = 0
    for dl in lists:
        frame = truth[dl.header.stamp_ns]
        for box, returns in zip(frame.boxes, frame.lidar_points, strict=True):
            if math.hypot(*box.center[:2]) > 40 or returns < 15:
                continue
            uv, depth = camera.project(camera_from_vehicle.apply(np.array([box.center])))
            if camera.in_image(uv)[0] and depth[0] > 0:
                continue
            seen += 1
            found += any(_on_box(d, box, 0.5) for d in dl.detections)
    assert seen > 100
    # Misses are objects merged with a neighbour closer than a cell or two (cyclist beside a car).
    assert found / seen >= 0.9, f"{found}/{seen}"


# -- real KITTI frames --------------------------------------------------------------------------


def test_kitti_lidar_only_objects_never_duplicate_fused_ones(kitti_dir: Path, yolox_path: Path):
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    from perception.config import CameraModelConfig
    from perception.pipeline import Pipeline
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.offline import run_messages

    pipeline = Pipeline.from_config(CameraModelConfig(), yolox_path)
    lists = list(run_messages(KittiObjectFolder(kitti_dir).messages(), pipeline))
    assert len(lists) == 8
    for dl in lists:
        fused = [d for d in dl.detections if "camera" in d.sources]
        lidar_only = [d for d in dl.detections if d.sources == ("lidar",)]
        assert len(fused) + len(lidar_only) == len(dl.detections)
        for d in lidar_only:
            assert d.label == UNKNOWN_LABEL
            assert d.score <= LidarObjectConfig().max_score
            for f in fused:
                box = ReferenceBox(f.label, f.center, f.size, f.yaw)
                assert not _on_box(d, box, 0.0), f"frame {dl.header.seq}: {d} inside {f}"
