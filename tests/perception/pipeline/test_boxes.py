from __future__ import annotations

import math

import pytest

from perception.msgs.types import Detection3D
from perception.pipeline.boxes import bev_iou, suppress_duplicates


def _det(
    label: str,
    x: float,
    y: float,
    score: float,
    *,
    size: tuple[float, float, float] = (3.9, 1.6, 1.56),
    yaw: float = 0.0,
) -> Detection3D:
    return Detection3D(label, score, (x, y, -0.9), size, yaw, ("camera", "lidar"))


def test_bev_iou() -> None:
    a = _det("Car", 10.0, 0.0, 0.9, size=(4.0, 2.0, 1.5))
    assert bev_iou(a, a) == pytest.approx(1.0)
    assert bev_iou(a, _det("Car", 20.0, 0.0, 0.9)) == 0.0
    half = _det("Car", 12.0, 0.0, 0.9, size=(4.0, 2.0, 1.5))
    assert bev_iou(a, half) == pytest.approx(1.0 / 3.0)
    turned = _det("Car", 10.0, 0.0, 0.9, size=(4.0, 2.0, 1.5), yaw=math.pi / 2)
    assert bev_iou(a, turned) == pytest.approx(4.0 / 12.0)


def test_suppress_duplicates() -> None:
    car = _det("Car", 13.5, -0.9, 0.5)
    truck = _det("truck", 14.5, -1.4, 0.33, size=(6.0, 2.4, 2.8))
    other = _det("Car", 25.0, 3.0, 0.7)
    pedestrian = _det("Pedestrian", 13.5, 1.6, 0.8, size=(0.8, 0.6, 1.73))
    kept = suppress_duplicates([car, truck, other, pedestrian])
    assert kept == [pedestrian, other, car]
    assert truck in suppress_duplicates([car, truck], class_agnostic=False)
    # Two pedestrians walking side by side are not duplicates.
    p1 = _det("Pedestrian", 8.0, 0.0, 0.9, size=(0.8, 0.6, 1.73))
    p2 = _det("Pedestrian", 8.0, 0.65, 0.8, size=(0.8, 0.6, 1.73))
    assert suppress_duplicates([p1, p2]) == [p1, p2]
    assert suppress_duplicates([]) == []
    with pytest.raises(ValueError):
        suppress_duplicates([car], iou_threshold=-1.0)


def test_bev_iou_agrees_with_opencv_on_random_boxes() -> None:
    """The clipping against OpenCV's rotated-rectangle intersection (float32, hence the
    tolerance), over boxes of every size, heading and overlap, and a square against itself
    turned 45 degrees (a regular octagon: IoU = sqrt(2) / 2)."""
    import cv2
    import numpy as np

    square = _det("Car", 5.0, 5.0, 0.9, size=(2.0, 2.0, 1.5))
    turned = _det("Car", 5.0, 5.0, 0.9, size=(2.0, 2.0, 1.5), yaw=math.pi / 4)
    assert bev_iou(square, turned) == pytest.approx(math.sqrt(2) / 2, abs=1e-12)
    rng = np.random.default_rng(3)
    overlapping = 0
    for _ in range(500):
        boxes = []
        for _ in range(2):
            x, y = rng.uniform(-3.0, 3.0, 2)
            length, width = rng.uniform(0.3, 8.0, 2)
            boxes.append(_det("Car", float(x), float(y), 0.9, size=(length, width, 1.5),
                              yaw=float(rng.uniform(-math.pi, math.pi))))  # fmt: skip
        a, b = boxes
        ra, rb = (((d.center[0], d.center[1]), d.size[:2], math.degrees(d.yaw)) for d in boxes)
        kind, region = cv2.rotatedRectangleIntersection(ra, rb)
        inter = 0.0 if region is None else float(cv2.contourArea(cv2.convexHull(region)))
        union = a.size[0] * a.size[1] + b.size[0] * b.size[1] - inter
        assert bev_iou(a, b) == pytest.approx(inter / union, abs=2e-4), (a, b, kind)
        overlapping += inter > 0
    assert overlapping > 200


def _greedy_reference(
    detections: list[Detection3D], iou_threshold: float, min_distance: float, agnostic: bool
) -> list[Detection3D]:
    """Greedy BEV suppression as its docstring states it, every pair tested."""
    kept: list[Detection3D] = []
    for det in sorted(detections, key=lambda d: -d.score):  # stable: ties keep input order
        if not any(
            (agnostic or k.label == det.label)
            and (
                math.dist(k.center[:2], det.center[:2]) < min_distance
                or bev_iou(k, det) > iou_threshold
            )
            for k in kept
        ):
            kept.append(det)
    return kept


def test_suppress_duplicates_matches_every_pair_tested() -> None:
    """Only pairs whose centres are close or whose bounding circles touch are tested: the
    result is that of testing every pair, on crowded random scenes (tied scores included)."""
    import numpy as np

    rng = np.random.default_rng(17)
    suppressed = 0
    for _ in range(300):
        dets = []
        for x, y in rng.normal(0.0, 4.0, (int(rng.integers(0, 30)), 2)):
            label = str(rng.choice(["Car", "truck", "Pedestrian"]))
            score = float(rng.choice([0.5, rng.uniform(0.1, 1.0)]))
            size = (float(rng.uniform(0.3, 7.0)), float(rng.uniform(0.3, 3.0)), 1.5)
            yaw = float(rng.uniform(-math.pi, math.pi))
            dets.append(_det(label, float(x), float(y), score, size=size, yaw=yaw))
        for threshold, distance, agnostic in ((0.3, 0.5, True), (0.1, 2.0, False)):
            kept = suppress_duplicates(
                dets,
                iou_threshold=threshold,
                min_center_distance_m=distance,
                class_agnostic=agnostic,
            )
            assert kept == _greedy_reference(dets, threshold, distance, agnostic)
            suppressed += len(dets) - len(kept)
    assert suppressed > 500
