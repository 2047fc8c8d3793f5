"""Evaluation: reference readers (PointPillars, KITTI labels), filters, projection, matching."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from perception.msgs.types import Detection3D
from replay.drive import DriveWriter
from replay.evaluation import (
    GROUND_TRUTH_LABELS,
    POINTPILLARS_CLASSES,
    MatchResult,
    ReferenceBox,
    average_precision,
    box_corners,
    drive_ground_truth,
    filter_references,
    format_report,
    match_detections,
    merge_results,
    project_box,
    read_kitti_labels,
    read_pointpillars_boxes,
    visible_fraction,
    yaw_error_deg,
)
from replay.synth.world import ground_truth_path
from tests.conftest import KittiFrame


def _det(label: str, x: float, y: float, yaw: float = 0.0, score: float = 0.9) -> Detection3D:
    return Detection3D(label, score, (x, y, -0.9), (3.9, 1.6, 1.56), yaw, ("camera", "lidar"))


def _ref(label: str, x: float, y: float, yaw: float = 0.0, score: float = 1.0) -> ReferenceBox:
    return ReferenceBox(label, (x, y, -0.9), (3.9, 1.6, 1.56), yaw, score)


# ---------------------------------------------------------------------------------------------
# Matching


def test_matching_is_greedy_by_distance_not_by_input_order() -> None:
    refs = [_ref("Car", 10.0, 0.0), _ref("Car", 12.0, 0.0)]
    # The first detection is 1.1 m from the first reference, but the second is closer to it.
    dets = [_det("Car", 11.1, 0.0), _det("Car", 9.8, 0.0)]
    result = match_detections(dets, refs)
    pairs = {(m.detection.center[0], m.reference.center[0]) for m in result.matches}
    assert pairs == {(9.8, 10.0), (11.1, 12.0)}
    errors = sorted(m.center_error_m for m in result.matches)
    assert errors == pytest.approx([0.2, 0.9])
    assert result.missed == () and result.false_positives == ()


def test_matching_is_class_aware_and_bounded() -> None:
    refs = [_ref("Car", 10.0, 0.0), _ref("Pedestrian", 20.0, 5.0)]
    dets = [_det("Pedestrian", 10.0, 0.0), _det("Pedestrian", 21.6, 5.0)]
    result = match_detections(dets, refs, max_center_distance_m=1.5)
    assert result.matches == ()
    assert set(result.missed) == set(refs)
    assert set(result.false_positives) == set(dets)
    car, ped = result.stats("Car"), result.stats("Pedestrian")
    assert (car.true_positives, car.false_negatives, car.false_positives) == (0, 1, 0)
    assert (ped.true_positives, ped.false_negatives, ped.false_positives) == (0, 1, 2)
    assert car.recall == 0.0 and car.precision is None
    assert ped.precision == 0.0
    # A larger radius lets the pedestrian match; the car reference stays missed.
    wider = match_detections(dets, refs, max_center_distance_m=2.0)
    assert len(wider.matches) == 1 and wider.recall("Pedestrian") == 1.0
    assert wider.precision("Pedestrian") == 0.5


def test_classes_argument_restricts_the_evaluation() -> None:
    refs = [_ref("Car", 10.0, 0.0), _ref("Van", 15.0, 0.0)]
    dets = [_det("Car", 10.1, 0.0), _det("truck", 30.0, 0.0)]
    result = match_detections(dets, refs, classes=["Car"])
    assert result.classes == ("Car",)
    assert len(result.matches) == 1 and result.missed == () and result.false_positives == ()
    everything = match_detections(dets, refs)
    assert everything.classes == ("Car", "Van", "truck")
    with pytest.raises(ValueError, match="max_center_distance_m"):
        match_detections(dets, refs, max_center_distance_m=-1.0)


def test_yaw_error_is_modulo_180_degrees() -> None:
    assert yaw_error_deg(0.3, 0.3 + math.pi) == pytest.approx(0.0, abs=1e-9)
    assert yaw_error_deg(0.0, math.radians(179.0)) == pytest.approx(1.0)
    assert yaw_error_deg(math.radians(10.0), math.radians(-10.0)) == pytest.approx(20.0)
    assert yaw_error_deg(0.0, math.radians(90.0)) == pytest.approx(90.0)
    assert yaw_error_deg(math.radians(-85.0), math.radians(85.0)) == pytest.approx(10.0)
    result = match_detections([_det("Car", 10.0, 0.0, yaw=math.pi)], [_ref("Car", 10.0, 0.0)])
    assert result.matches[0].yaw_error_deg == pytest.approx(0.0, abs=1e-9)


def test_yaw_error_of_a_yaw_far_beyond_a_turn_is_a_number() -> None:
    """A finite yaw of 1e308 rad (a detections file may hold one) overflowed to inf in degrees:
    `perception eval` reported the frame's yaw error as nan."""
    for a, b in ((1e308, 0.0), (1e308, -1e308), (-1e308, 0.5), (1e17, 1e17 + 1.0)):
        expected = math.degrees(math.remainder(a, math.tau) - math.remainder(b, math.tau))
        expected %= 180.0
        assert yaw_error_deg(a, b) == pytest.approx(min(expected, 180.0 - expected))
        assert 0.0 <= yaw_error_deg(a, b) <= 90.0
    result = match_detections([_det("Car", 10.0, 0.0, yaw=1e308)], [_ref("Car", 10.0, 0.0)])
    assert math.isfinite(result.matches[0].yaw_error_deg)


def test_merge_and_report() -> None:
    a = match_detections([_det("Car", 10.0, 0.0)], [_ref("Car", 10.3, 0.4)])
    b = match_detections([_det("Pedestrian", 5.0, 1.0)], [_ref("Car", 30.0, 0.0)])
    merged = merge_results([a, b])
    assert isinstance(merged, MatchResult)
    assert merged.classes == ("Car", "Pedestrian")
    car = merged.per_class["Car"]
    assert (car.true_positives, car.false_negatives) == (1, 1)
    assert car.median_center_error_m == pytest.approx(0.5)
    assert car.median_yaw_error_deg == pytest.approx(0.0)
    report = format_report(merged, title="two frames")
    assert report.splitlines()[0] == "two frames"
    assert "Car" in report and "Pedestrian" in report and "centre err 0.50 m" in report
    assert "missed Car" in report and "false positive Pedestrian" in report
    assert "centre err" not in format_report(merged, details=False)
    empty = merge_results([])
    assert empty.matches == () and format_report(empty).count("\n") == 1


# ---------------------------------------------------------------------------------------------
# Geometry


def test_box_corners_and_projection(kitti_frame: Callable[[str], KittiFrame]) -> None:
    box = ReferenceBox("Car", (10.0, 2.0, -0.9), (4.0, 2.0, 1.5), math.pi / 2)
    corners = box_corners(box)
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.mean(axis=0), box.center, atol=1e-12)
    np.testing.assert_allclose(np.ptp(corners, axis=0), [2.0, 4.0, 1.5], atol=1e-12)
    frame = kitti_frame("000003")
    cam, cam_from_vehicle = frame.camera, frame.camera_from_vehicle
    ahead = project_box(box, cam, cam_from_vehicle)
    assert ahead is not None
    x1, y1, x2, y2 = ahead
    assert 0 <= x1 < x2 <= cam.width and 0 <= y1 < y2 <= cam.height
    behind = ReferenceBox("Car", (-10.0, 0.0, -0.9), (4.0, 2.0, 1.5), 0.0)
    assert project_box(behind, cam, cam_from_vehicle) is None
    assert visible_fraction(behind, cam, cam_from_vehicle) == 0.0
    # Reaching behind the camera: clipped at the near plane, cut by the left image edge.
    beside = ReferenceBox("Car", (1.5, 3.0, -0.9), (4.0, 1.6, 1.5), 0.0)
    clipped = project_box(beside, cam, cam_from_vehicle)
    assert clipped is not None and clipped[0] == 0.0
    assert 0.0 < visible_fraction(beside, cam, cam_from_vehicle) < 0.5


# ---------------------------------------------------------------------------------------------
# Readers and filters on the real data


def test_read_pointpillars_boxes(reference_dir: Path) -> None:
    boxes = read_pointpillars_boxes(reference_dir / "000003.txt")
    lines = [ln for ln in (reference_dir / "000003.txt").read_text().splitlines() if ln.strip()]
    assert len(boxes) == len(lines)
    confident = [b for b in boxes if b.score >= 0.5]
    assert [b.label for b in confident] == ["Car", "Car"]
    first = confident[0]
    assert first.center == pytest.approx((13.5756, -0.936772, -0.92916))
    assert first.size == pytest.approx((4.20919, 1.7503, 1.64242))
    assert first.yaw == pytest.approx(3.1207)
    assert first.range_m == pytest.approx(math.hypot(13.5756, -0.936772))
    assert {b.label for b in boxes} <= set(POINTPILLARS_CLASSES)


def test_read_pointpillars_boxes_rejects_malformed_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3 4 5 6 0.1 0 0.9\n1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected 9 values"):
        read_pointpillars_boxes(bad)
    bad.write_text("1 2 3 4 5 6 0.1 7 0.9\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: unknown class id 7"):
        read_pointpillars_boxes(bad)
    bad.write_text("1 2 3 4 5 6 nan 0 0.9\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        read_pointpillars_boxes(bad)


def test_kitti_label_to_velodyne_matches_the_reference_pedestrian(
    kitti_dir: Path, reference_dir: Path
) -> None:
    labels = read_kitti_labels(
        kitti_dir / "label_2" / "000000.txt", kitti_dir / "calib" / "000000.txt"
    )
    assert len(labels) == 1
    ped = labels[0]
    assert ped.label == "Pedestrian" and ped.score == 1.0
    assert ped.size == (1.20, 0.48, 1.89)  # (l, w, h) from "h w l" = 1.89 0.48 1.20
    # rotation_y = 0.01: heading -ry - pi/2 for KITTI's axis-permuting calibration.
    assert yaw_error_deg(ped.yaw, -0.01 - math.pi / 2) < 0.5
    assert abs(math.remainder(ped.yaw - (-0.01 - math.pi / 2), 2 * math.pi)) < 0.01
    # PointPillars' pedestrian (score 0.90) is 0.06 m from the label centre.
    refs = read_pointpillars_boxes(reference_dir / "000000.txt")
    pp = max((r for r in refs if r.label == "Pedestrian"), key=lambda r: r.score)
    assert pp.score == pytest.approx(0.896795)
    bev = math.hypot(ped.center[0] - pp.center[0], ped.center[1] - pp.center[1])
    assert bev == pytest.approx(0.06, abs=0.01)
    # The label's centre is half its height above its bottom: about PointPillars' centre height.
    assert abs(ped.center[2] - pp.center[2]) < 0.1


def test_read_kitti_labels_skips_dont_care_and_names_bad_lines(
    kitti_dir: Path, tmp_path: Path
) -> None:
    calib = kitti_dir / "calib" / "000000.txt"
    label = tmp_path / "000000.txt"
    label.write_text(
        "Car 0.00 0 1.55 614.24 181.78 727.31 284.77 1.57 1.73 4.15 1.00 1.75 13.22 1.62\n"
        "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n"
    )
    boxes = read_kitti_labels(label, calib)
    assert [b.label for b in boxes] == ["Car"]
    assert boxes[0].center[0] == pytest.approx(13.22 + 0.27, abs=0.1)  # rect z -> velodyne x
    label.write_text("Car 0.00 0 1.55 614.24 181.78\n")
    with pytest.raises(ValueError, match=r"000000\.txt:1: expected 15 values"):
        read_kitti_labels(label, calib)


def test_filter_references(kitti_frame: Callable[[str], KittiFrame], reference_dir: Path) -> None:
    frame = kitti_frame("000003")
    boxes = read_pointpillars_boxes(reference_dir / "000003.txt")
    kept = filter_references(
        boxes, camera=frame.camera, camera_from_vehicle=frame.camera_from_vehicle
    )
    # The car at 13.6 m, and the one at 3.3 m of which only ~9% is in the image.
    assert sorted(round(r.range_m, 1) for r in kept) == [3.3, 13.6]
    stricter = filter_references(
        boxes,
        camera=frame.camera,
        camera_from_vehicle=frame.camera_from_vehicle,
        min_visible_fraction=0.5,
    )
    assert [round(r.range_m, 1) for r in stricter] == [13.6]
    assert all(r.score >= 0.5 and r.range_m <= 40 for r in kept)
    assert filter_references(boxes, max_range_m=10.0, min_score=0.5) == [
        r for r in boxes if r.score >= 0.5 and r.range_m <= 10.0
    ]
    assert filter_references(boxes, classes=["Cyclist"], min_score=0.0) == [
        r for r in boxes if r.label == "Cyclist" and r.range_m <= 40.0
    ]
    with pytest.raises(ValueError, match="together"):
        filter_references(boxes, camera=frame.camera)


def test_score_order_decides_who_gets_the_reference() -> None:
    # The higher-scored detection takes the reference even though the other one is closer.
    refs = [_ref("Car", 10.0, 0.0)]
    dets = [_det("Car", 10.1, 0.0, score=0.4), _det("Car", 10.8, 0.0, score=0.9)]
    result = match_detections(dets, refs)
    (m,) = result.matches
    assert m.detection.score == 0.9
    assert [d.score for d in result.false_positives] == [0.4]


def test_bev_iou_criterion() -> None:
    refs = [_ref("Car", 10.0, 0.0)]
    # 3.9 x 1.6 m footprints. Same centre, crossed: 1.6^2 / (2 * 6.24 - 1.6^2).
    rotated = [_det("Car", 10.0, 0.0, yaw=math.pi / 2)]
    iou = match_detections(rotated, refs).matches[0].bev_iou
    assert iou == pytest.approx(2.56 / 9.92, abs=1e-6)
    assert not match_detections(rotated, refs, min_bev_iou=0.5).matches
    shifted = [_det("Car", 11.0, 0.0)]  # 2.9 m of 3.9 m overlap: 4.64 / 7.84
    (m,) = match_detections(shifted, refs, min_bev_iou=0.5).matches
    assert m.bev_iou == pytest.approx(4.64 / 7.84, abs=1e-6)
    with pytest.raises(ValueError, match="min_bev_iou"):
        match_detections(shifted, refs, min_bev_iou=1.5)


def test_average_precision_r40() -> None:
    refs = [_ref("Car", 10.0, 0.0), _ref("Car", 20.0, 0.0)]
    perfect = match_detections([_det("Car", 10, 0, score=0.9), _det("Car", 20, 0, score=0.8)], refs)
    assert average_precision(perfect, "Car") == pytest.approx(1.0)
    # A false positive ranked first: precision 0.5 at recall 0.5, 2/3 at recall 1.
    fp_first = match_detections(
        [
            _det("Car", 30, 0, score=0.95),
            _det("Car", 10, 0, score=0.9),
            _det("Car", 20, 0, score=0.8),
        ],
        refs,
    )
    assert average_precision(fp_first, "Car") == pytest.approx(2 / 3)
    half = match_detections([_det("Car", 10, 0)], refs)
    assert average_precision(half, "Car") == pytest.approx(0.5)
    assert average_precision(half, "Cyclist") is None


def test_score_frame_ignores_detections_of_objects_that_do_not_count() -> None:
    from replay.evaluation import score_frame

    refs = [
        ReferenceBox("Car", (10.0, 0.0, -0.9), (4.0, 1.8, 1.5), 0.0),  # counts, found
        ReferenceBox("Car", (20.0, 5.0, -0.9), (4.0, 1.8, 1.5), 0.0),  # hidden: found, ignored
        ReferenceBox("Car", (39.0, 0.0, -0.9), (4.0, 1.8, 1.5), 0.0),  # counts, missed
        ReferenceBox("Pedestrian", (8.0, 2.0, -0.8), (0.6, 0.6, 1.7), 0.0),  # found 0.6 m off
    ]
    dets = [
        Detection3D("Car", 0.9, (10.3, 0.1, -0.9), (4.0, 1.8, 1.5), 0.02),
        Detection3D("Car", 0.8, (20.2, 5.0, -0.9), (4.0, 1.8, 1.5), 0.0),
        Detection3D("Car", 0.7, (30.0, -9.0, -0.9), (4.0, 1.8, 1.5), 0.0),  # nothing there
        Detection3D("Pedestrian", 0.6, (8.6, 2.0, -0.8), (0.6, 0.6, 1.7), 0.0),
        Detection3D("Car", 0.9, (45.0, 0.0, -0.9), (4.0, 1.8, 1.5), 0.0),  # beyond the range
    ]
    result = score_frame(
        dets, refs, [True, False, True, True], classes=("Car", "Pedestrian"),
        match_distance_m={"Car": 1.0, "Pedestrian": 0.5}, range_m=40.0,
    )  # fmt: skip
    car, ped = result.stats("Car"), result.stats("Pedestrian")
    assert (car.true_positives, car.false_negatives, car.false_positives) == (1, 1, 1)
    # 0.6 m is beyond the pedestrian's 0.5 m: a miss and a false positive.
    assert (ped.true_positives, ped.false_negatives, ped.false_positives) == (0, 1, 1)
    with pytest.raises(ValueError, match="flags"):
        score_frame(dets, refs, [True], classes=("Car",), match_distance_m=1.0, range_m=40.0)


# ---------------------------------------------------------------------------------------------
# Reference values no box can have


def test_read_pointpillars_boxes_names_the_bad_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    for line, problem in (
        ("1 2 3 4 5 6 nan 0 0.9", "yaw nan is not finite"),
        ("1 2 3 4 5 6 0.1 inf 0.9", "class_id inf is not finite"),
        ("1 2 3 4 -5 6 0.1 0 0.9", "dy -5 is negative (a box size, m)"),
        ("1 2 3 4 5 6 0.1 0 5", "score 5 is outside [0, 1]"),
        ("1 2 3 4 5 6 0.1 1.5 0.9", "unknown class id 1.5 (known: 0 Car, 1 Pedestrian, "),
        ("1 2 x 4 5 6 0.1 0 0.9", "z 'x' is not a number"),
    ):
        bad.write_text(f"1 2 3 4 5 6 0.1 0 0.9\n\n{line}\n")
        with pytest.raises(ValueError) as info:
            read_pointpillars_boxes(bad)
        assert str(info.value).startswith(f"{bad}:3: {problem}")
    # Zero sizes and the bounds of the score are values a box can have.
    bad.write_text("1 2 3 0 0 0 0.1 2 0\n1 2 3 4 5 6 0.1 0 1\n")
    assert [b.score for b in read_pointpillars_boxes(bad)] == [0.0, 1.0]


def test_read_kitti_labels_names_the_bad_value(kitti_dir: Path, tmp_path: Path) -> None:
    calib = kitti_dir / "calib" / "000000.txt"
    label = tmp_path / "000000.txt"
    good = "Car 0.00 0 1.55 614.24 181.78 727.31 284.77 1.57 1.73 4.15 1.00 1.75 13.22 1.62"
    for line, problem in (
        (good.replace("13.22", "nan"), "z nan is not finite"),
        (good.replace(" 1.62", " -inf"), "rotation_y -inf is not finite"),
        (good.replace("614.24", "nan"), "x1 nan is not finite"),
        (good.replace("1.73", "-1.73"), "w -1.73 is negative (a box size, m)"),
        (good.replace("Car", "car"), "unknown object type 'car' (KITTI's: Car, Van, "),
    ):
        label.write_text(f"{good}\n{line}\n")
        with pytest.raises(ValueError) as info:
            read_kitti_labels(label, calib)
        assert str(info.value).startswith(f"{label}:2: {problem}")
    # DontCare rows, when read, keep KITTI's -1 sizes (no box).
    label.write_text(
        "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n"
    )
    assert [b.size for b in read_kitti_labels(label, calib, skip=())] == [(-1.0, -1.0, -1.0)]


@pytest.mark.parametrize(
    ("x", "z"),
    [("8_7.0356", "1_3.22"), ("\uff18.70356", "\uff113.22")],  # underscores, full-width digits
)
def test_a_reference_number_float_alone_would_read_is_refused(
    kitti_dir: Path, reference_dir: Path, tmp_path: Path, x: str, z: str
) -> None:
    """float() reads `8_7.0356` as 87.0356 and a full-width 8 as 8: a box 10 times as far, or
    a damaged file taken as a good one."""
    text = (reference_dir / "000000.txt").read_text()
    assert text.startswith("8.70356 ")
    boxes = tmp_path / "000000.txt"
    boxes.write_text(x + text.removeprefix("8.70356"), encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_pointpillars_boxes(boxes)
    assert str(info.value) == f"{boxes}:1: x {x!r} is not a number"
    calib = kitti_dir / "calib" / "000000.txt"
    good = "Car 0.00 0 1.55 614.24 181.78 727.31 284.77 1.57 1.73 4.15 1.00 1.75 13.22 1.62"
    label = tmp_path / "label.txt"
    label.write_text(good.replace(" 13.22 ", f" {z} ") + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_kitti_labels(label, calib)
    assert str(info.value) == f"{label}:1: z {z!r} is not a number"


def test_read_kitti_labels_of_pointpillars_boxes_says_what_is_wrong_with_them(
    kitti_dir: Path, tmp_path: Path
) -> None:
    calib = kitti_dir / "calib" / "000000.txt"
    boxes = tmp_path / "000000.txt"
    boxes.write_text("1 2 3 4 5 6 0.1 0 0.9\n1 2 3 4 5 6 0.1 7 0.9\n")
    with pytest.raises(ValueError, match=r"000000\.txt:2: unknown class id 7"):
        read_kitti_labels(boxes, calib)
    boxes.write_text("1 2 3 4 5 6 0.1 0 0.9\n")
    with pytest.raises(ValueError, match=r"000000\.txt:1: a PointPillars box, not a KITTI label"):
        read_kitti_labels(boxes, calib)


# ---------------------------------------------------------------------------------------------
# Ground truth of drives


def _truth_doc(seq: int, **changes: object) -> dict[str, object]:
    box: dict[str, object] = {
        "id": 7, "label": "Car", "center": [5.0, 1.0, -0.9], "size": [3.9, 1.6, 1.5], "yaw": 0.1,
        "velocity": [3.0, 0.0], "lidar_points": 40, "camera_visible": 0.8,
    }  # fmt: skip
    box.update(changes)
    return {"seq": seq, "stamp_ns": 1_000 + seq, "boxes": [box]}


def test_ground_truth_labels_cover_every_writer() -> None:
    from replay.datasets.nuscenes_geometry import CATEGORY_LABELS, label_of
    from replay.synth.scene import ROAD_USER_LABELS

    assert set(ROAD_USER_LABELS) <= GROUND_TRUTH_LABELS
    assert set(CATEGORY_LABELS.values()) <= GROUND_TRUTH_LABELS
    assert label_of("animal", ()) in GROUND_TRUTH_LABELS
    assert label_of("vehicle.bicycle", ("cycle.with_rider",)) in GROUND_TRUTH_LABELS


def test_drive_ground_truth_beside_the_drive(tmp_path: Path) -> None:
    drive = tmp_path / "d.mcap"  # only the file beside it is read
    beside = ground_truth_path(drive)
    docs = [_truth_doc(0), _truth_doc(1)]
    beside.write_text("".join(json.dumps(d) + "\n" for d in docs))
    frames = drive_ground_truth(drive)
    assert [f.seq for f in frames] == [0, 1] and frames[1].velocities == ((3.0, 0.0),)
    for key, value, problem in (
        ("center", [float("nan"), 1.0, -0.9], "center [nan, 1.0, -0.9] is not 3 finite numbers"),
        ("size", [3.9, -1.6, 1.5], "size [3.9, -1.6, 1.5] is negative"),
        ("velocity", [0.0, -150.0], "velocity [0.0, -150.0] m/s is faster than 100 m/s"),
        ("camera_visible", float("nan"), "camera_visible nan is outside [0, 1]"),
    ):
        docs[1] = _truth_doc(1, **{key: value})
        beside.write_text("".join(json.dumps(d) + "\n" for d in docs))
        with pytest.raises(ValueError) as info:
            drive_ground_truth(drive)
        assert str(info.value) == f"{beside}:2: object 7 (Car): {problem}"
    docs[1] = _truth_doc(1, label="Dragon")
    beside.write_text("".join(json.dumps(d) + "\n" for d in docs))
    with pytest.raises(ValueError, match=r"d\.mcap\.gt\.jsonl:2: object 7: unknown label 'Dragon'"):
        drive_ground_truth(drive)


def test_drive_ground_truth_of_its_channel(tmp_path: Path) -> None:
    drive = tmp_path / "d.mcap"
    with DriveWriter(drive) as w:
        w.write_ground_truth(_truth_doc(0), 2_000)
        w.write_ground_truth(_truth_doc(1, size=[-3.9, 1.6, 1.5]), 2_001)
    with pytest.raises(ValueError) as info:
        drive_ground_truth(drive)
    assert str(info.value) == (
        f"{drive}: ground truth of sweep 1: object 7 (Car): size [-3.9, 1.6, 1.5] is negative"
    )
