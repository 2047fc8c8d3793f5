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
