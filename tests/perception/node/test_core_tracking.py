"""The node core runs the tracker after fusion on a synthetic drive (GNSS, camera, lidar): one
TrackList per DetectionList in the ENU frame of the ego poses, tracked once the DetectionList is
out and timed as a stage of its own; a camera outage
of a second keeps the ids of the cars the lidar keeps seeing; sweeps the node skips (0.1 to
0.5 s apart) keep them too.

With the learned fusion: with the geometric one, a car passing close by (its camera box's
centre a metre off for a few sweeps) still changes id, outage or not (benchmarks/RESULTS.md,
"Tracking")."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines.camera.detector import CameraDetector
from engines.factory import EngineFactory
from perception.config import BudgetConfig, NodeConfig, SyncConfig
from perception.msgs.types import CameraFrame, DetectionList, LidarSweep, TrackList
from perception.node.core import NodeCore
from perception.pipeline import Pipeline
from replay.drive import DriveReader
from replay.mcap_player import checked_messages
from replay.offline import Received, run_core, run_records
from replay.synth.demo import SYNTH_DETECTOR_PATH, _pipeline, ensure_synthetic_drive
from replay.synth.world import CAMERA_OFFSET_NS, CAMERA_STREAM

SEED = 31  # neither a training, a tuning nor a reporting seed
SECONDS = 4.0
S = 1_000_000_000
#: Cars within this range with at least this many lidar returns in every sweep of a window are
#: the ones "the lidar keeps seeing".
RANGE_M = 30.0
MIN_POINTS = 40
MATCH_M = 1.5
#: ... and in the camera's view (its half field of view is 40.7 degrees), where the evaluation
#: scores tracks (replay.tracking_eval).
VIEW_DEG = 35.0


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tracking") / "drive.mcap"
    ensure_synthetic_drive(path, seed=SEED, seconds=SECONDS)
    return path


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    detector = CameraDetector(
        EngineFactory().camera_encoder(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.15
    )
    return _pipeline("learned", detector, None)


def _config() -> NodeConfig:
    sync = SyncConfig(
        camera_offsets_ms={CAMERA_STREAM: CAMERA_OFFSET_NS / 1e6},
        camera_windows_ms={CAMERA_STREAM: 20.0},
    )
    return dataclasses.replace(NodeConfig(), sync=sync)


def _run(
    drive: Path, pipeline: Pipeline, keep: Callable[[Any], bool] = lambda message: True
) -> list[tuple[DetectionList, TrackList]]:
    reader = DriveReader(drive)
    config = _config()
    tracks: list[TrackList] = []
    records = (r for r in checked_messages(reader) if keep(r.message))
    lists = list(
        run_records(records, pipeline, config, default_rig=reader.rig, on_tracks=tracks.append)
    )
    assert len(tracks) == len(lists)
    return list(zip(lists, tracks, strict=True))


def _ids_of_seen_cars(
    drive: Path, out: list[tuple[DetectionList, TrackList]], start_ns: int, end_ns: int
) -> dict[int, list[int | None]]:
    """For each ground-truth car the lidar sees well in every sweep stamped in [start, end):
    the id of the confirmed track on it (nearest, of any class, within MATCH_M; None when
    none) per sweep."""
    truth = {d["stamp_ns"]: d["boxes"] for d in DriveReader(drive).ground_truth()}
    tracks = {tl.header.stamp_ns: tl for _, tl in out}
    stamps = sorted(s for s in tracks if start_ns <= s < end_ns)
    seen: set[int] | None = None
    for stamp in stamps:
        now = {
            b["id"]
            for b in truth[stamp]
            if b["label"] == "Car"
            and math.hypot(*b["center"][:2]) < RANGE_M
            and abs(math.degrees(math.atan2(b["center"][1], b["center"][0]))) < VIEW_DEG
            and b["lidar_points"] >= MIN_POINTS
        }
        seen = now if seen is None else seen & now
    ids: dict[int, list[int | None]] = {car: [] for car in seen or ()}
    for stamp in stamps:
        for box in truth[stamp]:
            if box["id"] not in ids:
                continue
            # Any class: a car outside the camera's view is an `unknown` track.
            near = [
                (math.dist(t.center[:2], box["center"][:2]), t.track_id)
                for t in tracks[stamp].tracks
            ]
            best = min(near, default=(math.inf, None))
            ids[box["id"]].append(best[1] if best[0] < MATCH_M else None)
    return ids


def test_one_track_list_per_detection_list_in_the_enu_frame(
    drive: Path, pipeline: Pipeline
) -> None:
    out = _run(drive, pipeline)
    for dl, tl in out:
        assert tl.header.stamp_ns == dl.header.stamp_ns and tl.header.seq == dl.header.seq
        assert tl.header.stream == "tracks" and tl.world_frame == "enu" and tl.resets == 0
        # Tracked once the detections are out: the tracks carry the detections' timings and
        # their own; the detections do not wait for the tracker.
        assert "tracking" not in dl.timings_ns
        assert tl.timings_ns == {**dl.timings_ns, "tracking": tl.timings_ns["tracking"]}
        assert tl.timings_ns["tracking"] > 0
    ids = _ids_of_seen_cars(drive, out, out[10][0].header.stamp_ns, out[-1][0].header.stamp_ns)
    assert len(ids) >= 3
    for car, found in ids.items():
        assert None not in found and len(set(found)) == 1, f"car {car}: {found}"


def test_the_tracking_budget_is_the_track_lists(drive: Path, pipeline: Pipeline) -> None:
    """The tracker runs after the detections are out: a tracking overrun is counted for its
    stage, and neither clears a DetectionList's `budget_ok` nor counts it over budget."""
    reader = DriveReader(drive)
    budgets = BudgetConfig(end_to_end_ms=1e9, stages_ms={"tracking": 1e-6})
    core = NodeCore(dataclasses.replace(_config(), budgets=budgets), pipeline, reader.rig)
    received = (
        Received(r.topic, r.log_time_ns, message=r.message) for r in checked_messages(reader)
    )
    tracks: list[TrackList] = []
    lists = list(run_core(core, received, on_tracks=tracks.append))
    assert len(lists) == len(tracks) > 10
    assert all(dl.budget_ok for dl in lists)
    assert core.counters.overruns_by_stage == {"tracking": len(tracks)}
    assert core.counters.budget_overruns == 0


def test_a_camera_outage_keeps_the_ids_of_cars_the_lidar_sees(
    drive: Path, pipeline: Pipeline
) -> None:
    start = DriveReader(drive).ground_truth()[0]["stamp_ns"]
    outage = (start + int(1.5 * S), start + int(2.5 * S))

    def keep(message: Any) -> bool:
        stamp = message.header.stamp_ns
        return not (isinstance(message, CameraFrame) and outage[0] <= stamp < outage[1])

    out = _run(drive, pipeline, keep)
    during = [dl for dl, _ in out if outage[0] + S // 2 <= dl.header.stamp_ns < outage[1]]
    # The camera really is out: every detection is the lidar's alone.
    assert during and all(dl.degraded == (CAMERA_STREAM,) for dl in during)
    assert all(d.sources == ("lidar",) for dl in during for d in dl.detections)
    ids = _ids_of_seen_cars(drive, out, start + 1 * S, start + 3 * S)
    assert len(ids) >= 3
    for car, found in ids.items():
        assert None not in found and len(set(found)) == 1, f"car {car}: {found}"


def test_sweeps_skipped_up_to_half_a_second_apart_keep_the_ids(
    drive: Path, pipeline: Pipeline
) -> None:
    start = DriveReader(drive).ground_truth()[0]["stamp_ns"]
    # Kept sweeps 1, 2, 3, 5, 4, 1 ... periods apart (0.1 to 0.5 s), from 1 s on.
    kept = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
    gaps = [1, 2, 3, 5, 4]
    k = 10
    while k < 40:
        k += gaps[len(kept) % len(gaps)]
        kept.add(k)

    def keep(message: Any) -> bool:
        if not isinstance(message, LidarSweep):
            return True
        return round((message.header.stamp_ns - start) / (S / 10)) in kept

    out = _run(drive, pipeline, keep)
    stamps = [dl.header.stamp_ns for dl, _ in out]
    steps = {b - a for a, b in itertools.pairwise(stamps)}
    assert max(steps) >= 4 * S // 10
    ids = _ids_of_seen_cars(drive, out, start + 1 * S, start + int(SECONDS * S))
    assert len(ids) >= 3
    for car, found in ids.items():
        assert None not in found and len(set(found)) == 1, f"car {car}: {found}"
