"""Regression replays: the KITTI object frames replayed and compared with the stored reference,
and the comparison's rules on small hand-made perturbations.

The reference `references/kitti_object_yolox.jsonl` holds only our detections (no KITTI data).
To update it on purpose after a change that is meant to move detections, run
`python -m pytest tests/replay/test_regression.py --update-references` and commit
the file with the change."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from perception.config import CameraModelConfig
from perception.msgs.types import CameraBox, Detection3D, DetectionList, Header
from perception.pipeline import Pipeline
from replay.datasets.kitti_object import KittiObjectFolder
from replay.errors import ReplayError
from replay.offline import run_messages
from replay.regression import (
    Tolerances,
    compare_detections,
    format_differences,
    load_reference,
    update_reference,
)

REFERENCE = Path(__file__).parent / "references" / "kitti_object_yolox.jsonl"


def _replay_kitti(kitti_dir: Path, yolox_path: Path) -> list[DetectionList]:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    pipeline = Pipeline.from_config(CameraModelConfig(), yolox_path)
    folder = KittiObjectFolder(kitti_dir)
    return list(run_messages(folder.messages(), pipeline))


def test_kitti_object_replay_matches_reference(
    kitti_dir: Path, yolox_path: Path, request: pytest.FixtureRequest
) -> None:
    actual = _replay_kitti(kitti_dir, yolox_path)
    if request.config.getoption("--update-references"):
        update_reference(REFERENCE, actual)
    reference = load_reference(REFERENCE)
    # The reference is a reviewed file: 15 camera-fused detections, and the lidar-only objects
    # (all `unknown`) of the BEV clusters no camera box explains.
    fused = [d for r in reference for d in r.detections if "camera" in d.sources]
    lidar_only = [d for r in reference for d in r.detections if d.sources == ("lidar",)]
    assert len(reference) == 8 and len(fused) == 15
    assert lidar_only and {d.label for d in lidar_only} == {"unknown"}
    assert len(fused) + len(lidar_only) == sum(len(r.detections) for r in reference)
    differences = compare_detections(actual, reference)
    assert not differences, format_differences(differences)
    # A moved detection in the real run is seen.
    moved = list(actual)
    d = moved[6].detections[2]
    moved[6] = replace(
        moved[6], detections=(*moved[6].detections[:2], replace(d, center=(d.center[0] + 0.3,
                              d.center[1], d.center[2])), *moved[6].detections[3:])
    )  # fmt: skip
    found = compare_detections(moved, reference)
    assert [(x.index, x.field) for x in found] == [(6, "center")]


def _dl(*dets: Detection3D, seq: int = 0, timings: dict[str, int] | None = None) -> DetectionList:
    return DetectionList(
        Header("detections", seq, seq * 100_000_000, "vehicle"),
        tuple(dets),
        timings_ns=timings or {"camera_encoder": 1_000_000},
        latency_ns=5_000_000,
    )


def _car(x: float = 10.0, **kw: object) -> Detection3D:
    base = Detection3D(
        label="Car",
        score=0.8,
        center=(x, 2.0, -0.9),
        size=(3.9, 1.6, 1.56),
        yaw=0.1,
        sources=("camera", "lidar"),
        camera_box=CameraBox("front", 100.0, 150.0, 300.0, 250.0),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


PED = Detection3D("Pedestrian", 0.7, (8.0, -1.0, -0.7), (0.8, 0.6, 1.8), 0.0)


def test_identical_runs_have_no_differences() -> None:
    run = [_dl(_car(), PED), _dl(seq=1)]
    assert compare_detections(run, run) == []
    assert format_differences([]) == "no differences"


def test_small_perturbation_of_one_detection_is_reported() -> None:
    reference = [_dl(_car(), PED)]
    moved = [_dl(_car(x=10.06), PED)]  # 6 cm, tolerance 5 cm
    diffs = compare_detections(moved, reference, Tolerances())
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.index, d.detection, d.field, d.tolerance) == (0, 0, "center", 0.05)
    assert d.actual[0] == pytest.approx(10.06) and d.reference[0] == 10.0
    assert "center" in str(d) and "list 0" in str(d)
    # Within tolerance: no difference.
    assert compare_detections([_dl(_car(x=10.04), PED)], reference) == []


@pytest.mark.parametrize(
    ("changed", "fields"),
    [
        (_car(size=(3.9, 1.7, 1.56)), ["size"]),
        (_car(yaw=0.15), ["yaw"]),
        (_car(score=0.82), ["score"]),
        (_car(sources=("camera",)), ["sources"]),
        (_car(camera_box=CameraBox("front", 101.0, 150.0, 300.0, 250.0)), ["camera_box.x1"]),
        (_car(camera_box=CameraBox("left", 100.0, 150.0, 300.0, 250.0)), ["camera_box.camera"]),
        (_car(camera_box=None), ["camera_box"]),
        (_car(latitude_deg=49.0, longitude_deg=8.4), ["latitude_deg", "longitude_deg"]),
    ],
)
def test_each_field_is_compared(changed: Detection3D, fields: list[str]) -> None:
    # Fields are named by their key paths in the JSON document.
    diffs = compare_detections([_dl(changed)], [_dl(_car())])
    assert [d.field for d in diffs] == fields


def test_global_position_within_tolerance() -> None:
    placed = _car(latitude_deg=49.0, longitude_deg=8.4)
    near = _car(latitude_deg=49.0 + 5e-7, longitude_deg=8.4)
    assert compare_detections([_dl(near)], [_dl(placed)]) == []
    far = _car(latitude_deg=49.0 + 2e-6, longitude_deg=8.4)
    assert [d.field for d in compare_detections([_dl(far)], [_dl(placed)])] == ["latitude_deg"]


def test_yaw_is_compared_modulo_pi() -> None:
    assert compare_detections([_dl(_car(yaw=0.1 + math.pi))], [_dl(_car())]) == []
    assert compare_detections([_dl(_car(yaw=0.1 - math.pi + 0.01))], [_dl(_car())]) == []


def test_labels_and_counts_are_exact() -> None:
    relabelled = compare_detections([_dl(_car(label="Truck"))], [_dl(_car())])
    assert [d.field for d in relabelled] == ["missing", "extra[0]"]
    fewer = compare_detections([_dl(_car())], [_dl(_car(), PED)])
    assert [d.field for d in fewer] == ["count", "missing"]
    lists = compare_detections([_dl(_car())], [_dl(_car()), _dl(seq=1)])
    assert [(d.index, d.field) for d in lists] == [(None, "lists")]


def test_order_of_detections_does_not_matter() -> None:
    assert compare_detections([_dl(PED, _car(), _car(x=20.0))],
                              [_dl(_car(x=20.0), _car(), PED)]) == []  # fmt: skip


def test_ignored_fields() -> None:
    slow = [replace(_dl(_car()), timings_ns={"fusion": 9}, latency_ns=99, budget_ok=False)]
    assert compare_detections(slow, [_dl(_car())]) == []
    strict = Tolerances(ignored=frozenset())
    fields = {d.field for d in compare_detections(slow, [_dl(_car())], strict)}
    assert fields == {"timings_ns", "latency_ns", "budget_ok"}
    no_scores = Tolerances(ignored=frozenset({"score"}) | Tolerances().ignored)
    assert compare_detections([_dl(_car(score=0.1))], [_dl(_car())], no_scores) == []
    moved_stamp = [replace(_dl(_car()), header=Header("detections", 0, 1, "vehicle"))]
    assert [d.field for d in compare_detections(moved_stamp, [_dl(_car())])] == ["header.stamp_ns"]
    no_header = Tolerances(ignored=frozenset({"header"}) | Tolerances().ignored)
    assert compare_detections(moved_stamp, [_dl(_car())], no_header) == []


def test_ignored_names_must_be_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['timings'\]"):
        Tolerances(ignored=frozenset({"timings"}))


def test_tolerances_validate() -> None:
    with pytest.raises(ValueError, match="center_m"):
        Tolerances(center_m=-1.0)


def test_update_reference_writes_on_purpose(tmp_path: Path) -> None:
    path = tmp_path / "refs" / "run.jsonl"
    run = [_dl(_car(), PED), _dl(seq=1)]
    assert update_reference(path, run) == 2
    text = path.read_text()
    assert "timings_ns" not in text and "latency_ns" not in text and "budget_ok" not in text
    assert compare_detections(run, load_reference(path)) == []
    # Left-out fields read back as their defaults.
    assert all(r.timings_ns == {} and r.latency_ns == 0 for r in load_reference(path))
    assert len(format_differences(compare_detections([_dl(seq=5)] * 30, run), limit=3)) > 0


def test_missing_reference_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"nope\.jsonl: reference does not exist"):
        load_reference(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n')
    with pytest.raises(ReplayError, match=r"bad\.jsonl:1"):
        load_reference(bad)
