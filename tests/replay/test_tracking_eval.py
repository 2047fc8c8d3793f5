"""Tracking quality (replay.tracking_eval): cases whose answer is known by construction, and a
short synthetic drive through the real node core."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from perception.config import NodeConfig, SyncConfig
from perception.msgs.types import Header, Track, TrackList
from perception.node import NodeCore
from perception.pipeline import Pipeline
from replay.drive import DriveReader
from replay.evaluation import ReferenceBox
from replay.offline import Received, run_core
from replay.synth.world import (
    CAMERA_OFFSET_NS,
    CAMERA_STREAM,
    GroundTruthFrame,
    ground_truth_path,
    read_drive_ground_truth,
    read_ground_truth,
)
from replay.tracking_eval import (
    TrackingEvaluator,
    evaluate_tracks,
    format_tracking_report,
    merge_tracking,
)

PERIOD_NS = 100_000_000
Box = tuple[int, str, float, float]  # id, label, x, y


def _track(
    track_id: int,
    x: float,
    y: float,
    *,
    label: str = "Car",
    velocity: tuple[float, float] = (0.0, 0.0),
    yaw: float = 0.0,
) -> Track:
    return Track(
        track_id, label, 0.9, (x, y, -0.9), (4.0, 1.8, 1.5), yaw, velocity, (x, y, -0.9), yaw,
        velocity, 0.0, (0.0,) * 16, 0, 3, 0,
    )  # fmt: skip


def _frame(
    seq: int,
    boxes: Sequence[Box],
    *,
    velocity: tuple[float, float] = (0.0, 0.0),
    visible: float = 1.0,
    yaw: float = 0.0,
) -> GroundTruthFrame:
    refs = tuple(
        ReferenceBox(label, (x, y, -0.9), (4.0, 1.8, 1.5), yaw) for _, label, x, y in boxes
    )
    n = len(boxes)
    return GroundTruthFrame(
        seq, seq * PERIOD_NS, refs, (visible,) * n, (100,) * n,
        tuple(b[0] for b in boxes), (velocity,) * n,
    )  # fmt: skip


def _list(seq: int, tracks: Sequence[Track]) -> TrackList:
    return TrackList(Header("tracks", seq, seq * PERIOD_NS, "vehicle"), tuple(tracks))


def _drive(
    frames: int,
    boxes: Callable[[int], Sequence[Box]],
    tracks: Callable[[int], Sequence[Track]],
    **truth: object,
) -> tuple[list[TrackList], list[GroundTruthFrame]]:
    return (
        [_list(k, tracks(k)) for k in range(frames)],
        [_frame(k, boxes(k), **truth) for k in range(frames)],  # type: ignore[arg-type]
    )


def test_perfect_tracks_score_one() -> None:
    lists, truth = _drive(
        10,
        lambda k: [(4, "Car", 10.0 + 0.5 * k, 0.0), (5, "Pedestrian", 8.0, 4.0)],
        lambda k: [
            _track(1, 10.0 + 0.5 * k, 0.0, velocity=(5.0, 0.0)),
            _track(2, 8.0, 4.0, label="Pedestrian", velocity=(5.0, 0.0)),
        ],
        velocity=(5.0, 0.0),
    )
    result = evaluate_tracks(lists, truth)
    car = result.stats("Car")
    assert (car.mota, car.idf1, car.motp_m) == (1.0, 1.0, 0.0)
    assert (car.objects, car.matches, car.gt_tracks, car.id_switches) == (10, 10, 1, 0)
    assert car.velocity_rmse_mps == 0.0 and car.median_heading_error_deg == 0.0
    assert result.stats("Pedestrian").mota == 1.0
    assert result.stats("Cyclist").mota is None  # no cyclist: undefined, not perfect
    assert (result.frames, result.unpaired) == (10, 0)


def test_an_id_switch_is_counted() -> None:
    lists, truth = _drive(
        10,
        lambda k: [(7, "Car", 20.0, 0.0)],
        lambda k: [_track(1 if k < 4 else 2, 20.3, 0.0)],
    )
    car = evaluate_tracks(lists, truth).stats("Car")
    assert car.id_switches == 1
    assert car.id_switches_per_100 == 100.0
    assert car.mota == pytest.approx(1.0 - 1 / 10)
    # The object's identity is the longer track (6 of 10 frames).
    assert car.idf1 == pytest.approx(0.6)
    assert car.motp_m == pytest.approx(0.3)


def test_a_gap_in_the_track_is_a_fragmentation_and_misses() -> None:
    lists, truth = _drive(
        10,
        lambda k: [(7, "Car", 20.0, 0.0)],
        lambda k: [] if k in (4, 5) else [_track(1, 20.0, 0.0)],
    )
    car = evaluate_tracks(lists, truth).stats("Car")
    assert (car.misses, car.fragmentations, car.id_switches) == (2, 1, 0)
    assert car.mota == pytest.approx(0.8)


def test_a_car_track_on_a_van_is_neither_hit_nor_false_positive() -> None:
    lists, truth = _drive(
        5,
        lambda k: [(1, "Van", 15.0, 3.0), (2, "Car", 25.0, -3.0)],
        lambda k: [_track(10, 15.2, 3.0), _track(11, 25.0, -3.0)],
    )
    car = evaluate_tracks(lists, truth).stats("Car")
    assert (car.objects, car.matches, car.false_positives, car.misses) == (5, 5, 0, 0)
    assert car.mota == 1.0
    # The same track on a truck (no neighbour of Car) is a false positive.
    lists, truth = _drive(
        5,
        lambda k: [(1, "Truck", 15.0, 3.0), (2, "Car", 25.0, -3.0)],
        lambda k: [_track(10, 15.2, 3.0), _track(11, 25.0, -3.0)],
    )
    car = evaluate_tracks(lists, truth).stats("Car")
    assert car.false_positives == 5 and car.mota == 0.0


def test_tracks_on_objects_that_do_not_count_are_set_aside() -> None:
    # Far (beyond 40 m) and half hidden cars are not scored; tracks on them are not false
    # positives, but a track on nothing is.
    far = [(1, "Car", 41.0, 0.0)]
    lists, truth = _drive(4, lambda k: far, lambda k: [_track(1, 40.5, 0.0)])
    assert evaluate_tracks(lists, truth).stats("Car").false_positives == 0
    lists, truth = _drive(
        4, lambda k: [(1, "Car", 10.0, 0.0)], lambda k: [_track(1, 10.0, 0.0)], visible=0.4
    )
    hidden = evaluate_tracks(lists, truth).stats("Car")
    assert (hidden.objects, hidden.false_positives) == (0, 0)
    lists, truth = _drive(4, lambda k: [], lambda k: [_track(1, 10.0, 0.0)])
    assert evaluate_tracks(lists, truth).stats("Car").false_positives == 4


def test_an_unknown_track_is_no_car_and_classes_need_their_match_distance() -> None:
    lists, truth = _drive(
        4,
        lambda k: [(1, "Car", 10.0, 0.0), (2, "Pedestrian", 12.0, 5.0)],
        # The pedestrian's track is 0.7 m off: within a car's 1 m, beyond a pedestrian's 0.5 m.
        lambda k: [_track(1, 10.0, 0.0, label="unknown"), _track(2, 12.7, 5.0, label="Pedestrian")],
    )
    result = evaluate_tracks(lists, truth)
    car, ped = result.stats("Car"), result.stats("Pedestrian")
    assert (car.misses, car.false_positives) == (4, 0)
    assert (ped.misses, ped.false_positives, ped.matches) == (4, 4, 0)


def test_motion_errors_of_moving_and_parked_objects() -> None:
    # Moving: 0.3 m/s off in velocity and driving backwards (heading 180 degrees off).
    lists, truth = _drive(
        4,
        lambda k: [(1, "Car", 10.0, 0.0)],
        lambda k: [_track(1, 10.0, 0.0, velocity=(8.0, 0.3), yaw=math.pi)],
        velocity=(8.0, 0.0),
    )
    car = evaluate_tracks(lists, truth).stats("Car")
    assert car.velocity_rmse_mps == pytest.approx(0.3)
    assert car.median_heading_error_deg == pytest.approx(180.0)
    assert car.static_speed_p95_mps is None
    # Parked: the tracked speeds 0 .. 0.9 m/s, so the 95th percentile is 0.855.
    lists, truth = _drive(
        10,
        lambda k: [(1, "Car", 10.0, 0.0)],
        lambda k: [_track(1, 10.0, 0.0, velocity=(0.0, 0.1 * k))],
    )
    parked = evaluate_tracks(lists, truth).stats("Car")
    assert parked.static_speed_p95_mps == pytest.approx(0.855)
    assert parked.velocity_rmse_mps is None and parked.median_heading_error_deg is None


def test_tracks_in_the_vehicle_frame_have_no_motion_scored() -> None:
    """Without an ego pose (a drive without GNSS) the tracker tracks in the vehicle frame: its
    velocities are relative to the moving vehicle, and scored against the ground's they read
    as the ego's own speed (a velocity RMSE of 6.12 m/s on the demo drive, nothing said)."""
    lists, truth = _drive(
        4,
        lambda k: [(1, "Car", 10.0, 0.0), (2, "Car", 20.0, 5.0)],
        lambda k: [_track(1, 10.0, 0.0, velocity=(2.0, 0.0)), _track(2, 20.0, 5.0)],
        velocity=(8.0, 0.0),
    )
    relative = [replace(tl, world_frame="vehicle") for tl in lists[:3]] + lists[3:]
    result = evaluate_tracks(relative, truth)
    car = result.stats("Car")
    assert (car.mota, car.matches) == (1.0, 8)  # positions are scored as before
    # The one frame tracked on the ground: 6 and 8 m/s off.
    assert car.velocity_rmse_mps == pytest.approx(math.sqrt((6**2 + 8**2) / 2))
    assert result.relative == 3
    assert "motion not scored on 3 of 4 frames: tracked in the vehicle frame" in (
        format_tracking_report(result)
    )
    every = evaluate_tracks([replace(tl, world_frame="vehicle") for tl in lists], truth)
    assert every.stats("Car").velocity_rmse_mps is None
    assert every.stats("Car").median_heading_error_deg is None
    assert merge_tracking([result, every]).relative == 7


def test_frames_pair_by_stamp_and_results_merge() -> None:
    lists, truth = _drive(6, lambda k: [(1, "Car", 10.0, 0.0)], lambda k: [_track(1, 10.0, 0.0)])
    # A TrackList of no ground-truth frame is left out; a frame without a TrackList counted.
    result = evaluate_tracks([*lists[:4], _list(99, [])], truth)
    assert (result.frames, result.unpaired, result.untruthed) == (4, 2, 1)
    merged = merge_tracking([result, result])
    car = merged.stats("Car")
    assert (merged.frames, car.objects, car.gt_tracks, car.mota) == (8, 8, 2, 1.0)
    text = format_tracking_report(merged)
    assert "(4 ground-truth frames without a TrackList, 2 TrackLists without ground" in text


def test_ground_truth_without_object_ids_is_refused() -> None:
    frame = replace(_frame(0, [(1, "Car", 10.0, 0.0)]), ids=(), velocities=())
    evaluator = TrackingEvaluator()
    with pytest.raises(ValueError, match="no object ids or velocities"):
        evaluator.add(_list(0, []), frame, [True])


def test_old_ground_truth_files_still_read(tmp_path: Path) -> None:
    box = {"label": "Car", "center": [1.0, 2.0, -0.9], "size": [4.0, 1.8, 1.5], "yaw": 0.1,
           "camera_visible": 0.8, "lidar_points": 50}  # fmt: skip
    path = tmp_path / "old.gt.jsonl"
    path.write_text(json.dumps({"seq": 0, "stamp_ns": 5, "boxes": [box]}) + "\n")
    (frame,) = read_ground_truth(path)
    assert (frame.ids, frame.velocities, frame.camera_visible) == ((), (), (0.8,))
    path.write_text(
        json.dumps({"seq": 0, "stamp_ns": 5, "boxes": [{**box, "id": 3, "velocity": [1, 2]}]})
    )
    (frame,) = read_ground_truth(path)
    assert (frame.ids, frame.velocities) == ((3,), ((1.0, 2.0),))
    path.write_text(
        json.dumps({"seq": 0, "stamp_ns": 5, "boxes": [{**box, "id": 3, "velocity": [1]}]})
    )
    with pytest.raises(ValueError, match="malformed ground truth"):
        read_ground_truth(path)
    path.write_text("[" * 100_000 + "]" * 100_000)  # was a RecursionError: "a bug"
    with pytest.raises(ValueError) as info:
        read_ground_truth(path)
    assert str(info.value) == (
        f"{path}:1: malformed ground truth (arrays and objects nested too deeply)"
    )


def test_a_synthetic_drive_through_the_node_core(synth_drive: Callable[[int, float], Path]) -> None:
    drive = synth_drive(1, 2.0)
    truth = read_ground_truth(ground_truth_path(drive))
    # The drive's own channel and the file beside it hold the same ids and velocities.
    assert read_drive_ground_truth(drive) == truth
    assert all(len(f.ids) == len(f.boxes) == len(f.velocities) > 0 for f in truth)
    reader = DriveReader(drive)
    from engines.camera.detector import CameraDetector
    from engines.factory import EngineFactory
    from replay.synth.demo import SYNTH_DETECTOR_PATH

    detector = CameraDetector(
        EngineFactory().camera_encoder(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.15
    )
    sync = SyncConfig(
        camera_offsets_ms={CAMERA_STREAM: CAMERA_OFFSET_NS / 1e6},
        camera_windows_ms={CAMERA_STREAM: 20.0},
    )
    core = NodeCore(replace(NodeConfig(), sync=sync), Pipeline(detector), reader.rig)
    lists: list[TrackList] = []
    received = (Received(r.topic, r.log_time_ns, message=r.message) for r in reader.messages())
    detections = list(run_core(core, received, on_tracks=lists.append))
    assert len(lists) == len(detections) == len(truth) == 20
    result = evaluate_tracks(lists, truth, rig=reader.rig)
    car = result.stats("Car")
    assert (result.frames, result.unpaired) == (20, 0)
    # Real figures, loosely bounded: tracks confirm after three sweeps, so a 2 s drive
    # misses the first sweeps of every car.
    assert car.gt_tracks >= 3 and car.objects >= 30
    assert car.matches > car.objects / 2
    assert car.mota is not None and 0.0 < car.mota <= 1.0
    assert car.idf1 is not None and car.idf1 > 0.5
    assert car.motp_m is not None and car.motp_m < 1.0
    assert car.velocity_rmse_mps is not None and car.static_speed_p95_mps is not None


def test_demo_trails_are_in_the_frame_of_the_picture() -> None:
    from replay.synth.demo import _trails

    # The ego at world (100, 50) heading 0.5 rad; a car 10 m ahead moving 5 m/s over the
    # ground along the ego's heading, a parked one 8 m to the left.
    c, s = math.cos(0.5), math.sin(0.5)

    def world(x: float, y: float) -> tuple[float, float]:
        return 100.0 + c * x - s * y, 50.0 + s * x + c * y

    def track(ident: int, x: float, y: float, wx: float, wy: float) -> Track:
        return replace(_track(ident, x, y), center_world=(wx, wy, -0.9), yaw_world=0.5)

    lists = []
    for k in range(25):
        dt = (24 - k) * 0.1  # seconds before the picture's frame
        ahead = world(10.0 - 5.0 * dt, 0.0)
        parked = world(0.0, 8.0)
        lists.append(_list(k, [track(1, 10.0, 0.0, *ahead), track(2, 0.0, 8.0, *parked)]))
    trails = _trails(lists, 24 * PERIOD_NS)
    assert [t.track.track_id for t in trails] == [1, 2]
    moving, still = trails
    # The last 2 s (20 sweeps): the car came 10 m, the parked one stayed.
    assert moving.points.shape == (20, 2) and still.points.shape == (20, 2)
    assert moving.points[-1] == pytest.approx([10.0, 0.0])
    assert moving.points[0] == pytest.approx([10.0 - 5.0 * 1.9, 0.0])
    assert np.allclose(still.points, [0.0, 8.0])
    assert _trails(lists, 99 * PERIOD_NS) == ()


def test_the_demo_reports_and_draws_tracks(tmp_path: Path) -> None:
    from replay.synth.demo import format_demo_report, run_demo

    report = run_demo(None, seed=3, seconds=1.0, out_dir=tmp_path)
    (run,) = report.runs
    assert run.tracking is not None and len(run.tracks) == len(run.lists) == 10
    assert run.tracking.frames == 10
    assert any(tl.tracks for tl in run.tracks)  # confirmed from the third sweep
    text = format_demo_report(report)
    assert "tracking vs ground truth, cars" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("geometric  MOTA"))
    assert "IDF1" in line and "ID switches" in line and "velocity RMSE" in line
    assert report.picture.is_file()
