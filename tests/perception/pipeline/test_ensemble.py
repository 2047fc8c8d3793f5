"""The ensemble of the geometric and the learned fusion: one object once, and its heading."""

from __future__ import annotations

import math

import pytest

from perception.msgs.types import Detection3D
from perception.pipeline.ensemble import YAW_AGREEMENT_RAD, merge_ensemble


def _det(
    x: float, yaw: float, score: float, sources: tuple[str, ...], contribution: float | None = None
) -> Detection3D:
    return Detection3D(
        "Car", score, (x, 0.0, -0.9), (4.0, 1.7, 1.5), yaw, sources=sources,
        camera_contribution=contribution,
    )  # fmt: skip


def test_a_pair_is_one_object_with_the_union_of_sources_and_either_score() -> None:
    merged = merge_ensemble(
        [_det(10.2, 0.0, 0.6, ("camera", "lidar"))], [_det(10.0, 0.0, 0.5, ("lidar",), 0.02)]
    )
    assert len(merged) == 1
    (car,) = merged
    assert car.score == pytest.approx(1 - 0.4 * 0.5)
    assert car.sources == ("camera", "lidar")
    # The learned engine's measure of the camera's part in its own score is kept.
    assert car.camera_contribution == 0.02
    assert car.center[0] == pytest.approx((10.2 * 0.6 + 10.0 * 0.5) / 1.1)


@pytest.mark.parametrize(
    ("geometric", "expected"),
    [
        (0.12, 0.12),  # agrees: the outline fit refines the learned heading
        (0.12 + math.pi, 0.12),  # the same heading seen from the box's other end
        (0.1 + YAW_AGREEMENT_RAD + 0.05, 0.1),  # disagrees (a lane prior): the learned one
    ],
)
def test_the_heading_is_refined_by_the_outline_fit_only_where_they_agree(
    geometric: float, expected: float
) -> None:
    (car,) = merge_ensemble(
        [_det(10.0, geometric, 0.6, ("camera", "lidar"))], [_det(10.0, 0.1, 0.7, ("lidar",))]
    )
    assert car.yaw == pytest.approx(expected)


def test_boxes_only_one_fusion_found_are_kept_as_they_are() -> None:
    geometric = _det(10.0, 0.0, 0.6, ("camera", "lidar"))
    learned = _det(30.0, 0.3, 0.7, ("lidar",))
    assert merge_ensemble([geometric], [learned]) == [learned, geometric]
