"""`perception demo` end to end on a short synthetic drive."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest

from perception.msgs.types import Detection3D, DetectionList, Header, LidarSweep
from replay.drive import SYNTHETIC_METADATA, DriveReader, DriveWriter
from replay.evaluation import ReferenceBox
from replay.output import OutputError, check_free_space
from replay.synth.demo import _evaluate, ensure_synthetic_drive, format_demo_report, run_demo
from replay.synth.world import ground_truth_path, synth_rig
from tests.replay.test_pictures import longest_blank_run


def test_demo_end_to_end(tmp_path: Path) -> None:
    report = run_demo(None, seed=0, seconds=4.0, out_dir=tmp_path)
    assert report.frames == 40
    assert report.detections.read_text().count("\n") == 40
    picture = cv2.imread(str(report.picture))
    assert picture is not None and picture.shape[0] >= 375 and picture.shape[1] > 1242
    # No blank strip under the camera image (the bird's-eye view beside it is as tall).
    assert longest_blank_run(picture[:, : picture.shape[1] // 2]) < 12
    assert report.recall is not None and report.precision is not None
    # Issue 7 asks for recall >= 0.9; this 4 s drive measures 0.917 (231/252), precision 0.895
    # (the 10 s `perception demo`: 0.940 and 0.934).
    assert report.recall >= 0.9
    assert report.precision >= 0.87
    stages = {s.stage for s in report.latency}
    assert {"camera_encoder", "fusion", "processing", "end_to_end"} <= stages
    latency = {s.stage: s for s in report.latency}
    # The node's latency: the 100 ms a sweep takes to record, then the processing.
    assert latency["end_to_end"].median_ms > 100 + latency["processing"].median_ms
    text = format_demo_report(report)
    assert "recall" in text and "fusion" in text


def _car(x: float, y: float) -> ReferenceBox:
    return ReferenceBox("Car", (x, y, -0.95), (3.9, 1.6, 1.56), 0.0)


def _detection(x: float, y: float) -> Detection3D:
    return Detection3D("Car", 0.9, (x, y, -0.95), (3.9, 1.6, 1.56), 0.0)


def test_evaluation_range_edges() -> None:
    rig = synth_rig()
    header = Header("detections", 0, 0, "vehicle")
    # A car just inside the range found by a detection just outside it is a true positive.
    dl = DetectionList(header, (_detection(40.4, 0.0),))
    result = _evaluate(dl, (_car(39.8, 0.0),), (1.0,), rig)
    assert (len(result.matches), len(result.missed), len(result.false_positives)) == (1, 0, 0)
    # A car mostly hidden in the camera image is not a reference; a detection of it is ignored.
    result = _evaluate(dl, (_car(39.8, 0.0),), (0.3,), rig)
    assert (len(result.matches), len(result.missed), len(result.false_positives)) == (0, 0, 0)
    # A car just outside the range is not a reference, and a detection of it is not a false
    # positive; a detection of nothing is.
    dl = DetectionList(header, (_detection(40.6, 0.0), _detection(20.0, 3.0)))
    result = _evaluate(dl, (_car(40.5, 0.0),), (1.0,), rig)
    assert (len(result.matches), len(result.missed), len(result.false_positives)) == (0, 0, 1)


def test_fusion_kinds_side_by_side_without_the_camera(tmp_path: Path, kitti_learned) -> None:
    """Every kind runs the same drive; with the camera removed nothing claims the camera, the
    geometric fusion finds no car (its boxes come from the camera) and the learned engine still
    names what it finds (the engine here was trained on KITTI frames: the plumbing is tested,
    not its quality on this world)."""
    report = run_demo(
        None, seed=3, seconds=1.0, out_dir=tmp_path, fusion=("geometric", "learned", "ensemble"),
        without="camera", learned_model=kitti_learned.onnx_path,
    )  # fmt: skip
    assert [r.kind for r in report.runs] == ["geometric", "learned", "ensemble"]
    # The first sweeps wait for the camera until it is declared dead, and the node skips the
    # bundles it fell behind on meanwhile, as live; then every sweep goes out at once.
    assert all(len(r.lists) >= 7 for r in report.runs)
    for run in report.runs:
        for dl in run.lists:
            assert dl.degraded == ("camera/front",)
            assert all("camera" not in d.sources for d in dl.detections)
    geometric = report.runs[0].result.stats("Car")
    assert geometric.true_positives == 0 and geometric.false_negatives > 0
    labels = {d.label for dl in report.runs[1].lists for d in dl.detections}
    assert labels <= {"Car", "Pedestrian", "Cyclist", "unknown"}
    text = format_demo_report(report)
    assert "without: camera" in text
    for kind in ("geometric", "learned", "ensemble"):
        for label in ("Car", "Pedestrian", "Cyclist"):
            assert any(line.split()[:2] == [label, kind] for line in text.splitlines()), (
                label,
                kind,
            )


def test_without_lidar_nothing_is_found(tmp_path: Path) -> None:
    report = run_demo(None, seed=3, seconds=0.5, out_dir=tmp_path, without="lidar")
    assert report.frames >= 4
    assert all(not dl.detections for dl in report.runs[0].lists)
    assert report.true_positives == 0 and report.false_negatives > 0


def test_the_simple_worlds_calibration_verdict_is_not_given_as_a_check_of_the_rig(
    tmp_path: Path,
) -> None:
    # An old picture of a drifted camera must not outlive the run that does not judge.
    (tmp_path / "calibration-front.png").write_bytes(b"old")
    report = run_demo(None, seed=3, seconds=0.5, out_dir=tmp_path)
    assert report.calibration and report.calibration_caveat is not None
    text = format_demo_report(report)
    line = "calibration monitor, camera front: not judged on this drive\n"
    assert text.index(line) < text.index("no static structure beside the road")
    assert text.index("no static structure beside the road") < text.index("detections:")
    # The verdict, which on this world hangs on luck, is not printed as one, nor drawn.
    monitor_lines = [ln for ln in text.splitlines() if ln.startswith("calibration monitor")]
    assert monitor_lines == [line.strip()] and "estimated correction" not in text
    assert report.calibration_pictures == () and not list(tmp_path.glob("calibration-*.png"))
    # A drive the user names says which world it is (its metadata)...
    again = run_demo(report.drive, seed=3, out_dir=tmp_path)
    assert again.calibration_caveat == report.calibration_caveat
    # ...and one that does not (written before drives recorded it) gets no caveat guessed.
    bare = tmp_path / "bare" / "synth.mcap"
    bare.parent.mkdir()
    reader = DriveReader(report.drive)
    truth = {doc["stamp_ns"]: doc for doc in reader.ground_truth()}
    with DriveWriter(bare, rig=None) as writer:
        for rec in reader.messages():
            writer.write(rec.message, rec.log_time_ns, rec.topic)
            if isinstance(rec.message, LidarSweep):
                writer.write_ground_truth(truth.pop(rec.message.header.stamp_ns), rec.log_time_ns)
    shutil.copyfile(ground_truth_path(report.drive), ground_truth_path(bare))
    assert DriveReader(bare).metadata(SYNTHETIC_METADATA) is None
    assert run_demo(bare, seed=3, out_dir=bare.parent).calibration_caveat is None


def test_a_drive_of_another_length_is_generated_not_reused(tmp_path: Path) -> None:
    """The drive is reused by its name, which said nothing of its length: after a 0.2 s demo,
    `--seconds 0.3` (or a plain demo's 10 s) scored the 0.2 s drive without a word."""
    short = run_demo(None, seed=3, seconds=0.2, out_dir=tmp_path)
    longer = run_demo(None, seed=3, seconds=0.3, out_dir=tmp_path)
    assert (short.frames, longer.frames) == (2, 3)
    assert short.drive.name == "synth_0.2s_seed3.mcap"
    assert longer.drive.name == "synth_0.3s_seed3.mcap"
    # The same length again is the same drive.
    assert run_demo(None, seed=3, seconds=0.2, out_dir=tmp_path).drive == short.drive


def test_bad_fusion_kinds_and_degradations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fusion"):
        run_demo(None, seconds=0.5, out_dir=tmp_path, fusion=("frustum",))
    with pytest.raises(ValueError, match="without"):
        run_demo(None, seconds=0.5, out_dir=tmp_path, without="radar")


def test_a_drive_the_disk_cannot_hold_is_refused_before_it_starts(tmp_path: Path) -> None:
    """`--seconds 1e9` would need petabytes: one error naming the folder, what the drive needs
    and what is free, and nothing written; a short drive fits."""
    with pytest.raises(OutputError, match=r"a 1e\+09 s synthetic drive \(simple world\) "
                       r"needs about [\d,]+ TB, and .* has [\d.]+ [kMGT]?B free"):  # fmt: skip
        ensure_synthetic_drive(tmp_path / "long.mcap", seconds=1e9)
    assert list(tmp_path.iterdir()) == []
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(OutputError, match="needs about"):
        check_free_space(tmp_path / "a" / "b.mcap", free * 2, "this")
    check_free_space(tmp_path / "a" / "b.mcap", 1000, "this")


def test_the_demo_runs_the_rich_world_and_scores_vans_as_kitti_does(tmp_path: Path) -> None:
    report = run_demo(None, seed=3, seconds=0.5, out_dir=tmp_path, scene="rich")
    assert report.frames == 5
    assert (tmp_path / "synth_rich_0.5s_seed3.mcap").is_file()
    assert report.recall is not None
    text = format_demo_report(report)
    for label in ("Car", "Pedestrian", "Cyclist"):
        assert label in text
    with pytest.raises(ValueError, match="scene: choose among simple, rich"):
        run_demo(None, seed=3, seconds=0.5, out_dir=tmp_path, scene="city")
    # The calibration monitor ran on the drive (too short for a verdict: still collecting).
    (status,) = report.calibration
    assert status.camera == "front" and status.state == "collecting"
    assert "calibration monitor, camera front: collecting after 2 frames" in text
    assert report.calibration_caveat is None and "no static structure" not in text


def test_the_demo_writes_a_drive_with_a_rig_error_beside_the_true_one(tmp_path: Path) -> None:
    from calibration.monitor import Correction

    error = Correction((0.0, 0.5, 0.0), (0.0, 0.0, 0.05))
    report = run_demo(None, seed=3, seconds=0.2, out_dir=tmp_path, rig_error=error)
    assert report.drive == tmp_path / "synth_rigerr_0_0.5_0_0_0_5_0.2s_seed3.mcap"
    rig = DriveReader(report.drive).rig
    assert rig is not None
    moved = rig.transform("vehicle", "camera/front")
    assert not moved.almost_equal(synth_rig().transform("vehicle", "camera/front"), 1e-6)


def test_a_car_detection_on_a_van_is_neither_a_hit_nor_a_false_positive() -> None:
    rig = synth_rig()
    header = Header("detections", 0, 0, "vehicle")
    van = ReferenceBox("Van", (15.0, 0.0, -0.7), (5.0, 2.0, 2.1), 0.0)
    dl = DetectionList(header, (_detection(15.2, 0.0),))
    result = _evaluate(dl, (van, _car(25.0, 3.0)), (1.0, 1.0), rig)
    assert (len(result.matches), len(result.missed), len(result.false_positives)) == (0, 1, 0)
    # Elsewhere the same detection is a false positive.
    result = _evaluate(DetectionList(header, (_detection(5.0, -3.0),)), (van,), (1.0,), rig)
    assert (len(result.matches), len(result.missed), len(result.false_positives)) == (0, 0, 1)
