"""`perception demo` end to end on a short synthetic drive."""

from __future__ import annotations

from pathlib import Path

import cv2

from perception.msgs.types import Detection3D, DetectionList, Header
from replay.evaluation import ReferenceBox
from replay.synth.demo import _evaluate, format_demo_report, run_demo
from replay.synth.world import synth_rig


def test_demo_end_to_end(tmp_path: Path) -> None:
    report = run_demo(None, seed=0, seconds=4.0, out_dir=tmp_path)
    assert report.frames == 40
    assert report.detections.read_text().count("\n") == 40
    picture = cv2.imread(str(report.picture))
    assert picture is not None and picture.shape[0] >= 375 and picture.shape[1] > 1242
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
