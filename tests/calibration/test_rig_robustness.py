"""Rig.from_dict on any JSON-like document (rigs also arrive as wire messages): a Rig, or a
CalibrationError naming the field, and never another exception, however deep, big or odd the
document; errors stay short; long frame chains cost linear time."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration import CalibrationError, Rig
from calibration.rig import MAX_DOCUMENT_DEPTH

EXAMPLE = Path(__file__).resolve().parents[2] / "calibration" / "examples" / "kitti_rig.yaml"
GOOD: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
FRONT = GOOD["cameras"]["front"]
IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def nested(depth: int, leaf: Any = 0.0) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def frame(parent: str, translation: list[float]) -> dict[str, Any]:
    return {"parent": parent, "rotation": IDENTITY, "translation": translation}


def with_(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(GOOD), **changes}


def camera(**changes: Any) -> dict[str, Any]:
    return with_(cameras={"front": {**FRONT, **changes}})


MIXED_KEYS: dict[Any, Any] = {**GOOD, 1: 2, "x": 3}
CASES = [
    ("rotation 1000 deep", with_(frames={"lidar": {"rotation": nested(1000)}}), r"frames: maps"),
    ("translation 5000 deep", with_(frames={"lidar": {"translation": nested(5000)}}), "frames"),
    ("matrix 1000 deep", with_(frames={"lidar": nested(1000)}), r"frames: maps and lists nested"),
    ("parent 1000 deep", with_(frames={"x": {"parent": nested(1000)}}), r"frames: maps"),
    ("source 3000 deep", with_(source=nested(3000)), r"source: maps and lists nested more"),
    ("version 3000 deep", with_(version=nested(3000)), r"version: maps and lists nested"),
    ("width 3000 deep", camera(width=nested(3000)), r"cameras: maps and lists nested"),
    ("nesting just too deep", with_(warnings=nested(MAX_DOCUMENT_DEPTH)), r"warnings: maps"),
    ("nesting at the limit", with_(warnings=nested(MAX_DOCUMENT_DEPTH - 1)), r"warnings: expe"),
    ("rotation 40 deep", with_(frames={"lidar": {"rotation": nested(40)}}), r"frames\.lidar"),
    ("lever arm beyond float", with_(gnss={"lever_arm_m": [10**400, 0, 0]}), r"gnss\.lever_arm"),
    (
        "intrinsics beyond float",
        camera(k=[[10**400, 0, 1], [0, 1, 1], [0, 0, 1]]),
        r"cameras\.front: in",
    ),
    ("distortion beyond float", camera(distortion=[10**400, 0, 0, 0]), r"cameras\.front: intr"),
    ("width beyond OpenCV", camera(width=10**30), r"cameras\.front: image size 10{30}x375 is"),
    ("width NaN", camera(width=math.nan), r"cameras\.front\.width: expected an integer, got nan"),
    ("width a map", camera(width={"a": 1}), r"cameras\.front\.width: expected an integer"),
    ("time offset beyond int64", with_(time_offsets_ns={"lidar": 2**70}), r"time_offsets_ns\.li"),
    # An error line of 400 digits each, before the values were cut short.
    ("time offset of 400 digits", with_(time_offsets_ns={"lidar": 10**400}), r"time_offsets_ns"),
    ("width of 400 digits", camera(width=10**400), r"cameras\.front: image size 10+\.\.\.0+x3"),
    # A skew of 1e300 was taken: every point then projected off the image, without a word.
    (
        "a skew of 1e300",
        camera(k=[[721.5, 1e300, 609.6], [0.0, 721.5, 172.9], [0.0, 0.0, 1.0]]),
        r"cameras\.front\.k: skew s=1e\+300 px is beyond fx=721\.5 px",
    ),
    ("keys of mixed types", MIXED_KEYS, r"unknown top-level field\(s\) \['1', 'x'\]"),
    ("a tuple key", with_(frames={(1, (2,)): {}}), r"frames: map keys must be strings, got \(1"),
    ("source not a string", with_(source=["a"]), r"source: expected a string, got \['a'\]"),
    ("warnings not strings", with_(warnings=[{"a": 1}]), r"warnings: expected a list of strings"),
    ("a frame set", with_(frames={"lidar": {1, 2}}), r"frames\.lidar: expected a mapping"),
    ("bytes for a rotation", with_(frames={"lidar": {"rotation": b"abc"}}), r"frames\.lidar"),
]


@pytest.mark.parametrize(("doc", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_odd_documents_are_calibration_errors_naming_the_field(doc: Any, message: str) -> None:
    with pytest.raises(CalibrationError, match=r"^net: " + message) as info:
        Rig.from_dict(doc, source="net")
    assert len(str(info.value)) < 400, str(info.value)


def test_a_huge_value_makes_a_short_error() -> None:
    with pytest.raises(CalibrationError) as info:
        Rig.from_dict(with_(gnss={"lever_arm_m": ["x" * 4_000_000]}), source="net")
    assert str(info.value).startswith("net: gnss.lever_arm_m: expected 3 numbers, got ['xxx")
    assert len(str(info.value)) < 300


def test_a_long_chain_of_frames_costs_linear_time() -> None:
    doc = copy.deepcopy(GOOD)
    parent = "lidar"
    for i in range(10_000):
        doc["frames"][f"link/{i}"] = frame(parent, [0.001, 0.0, 0.0])
        parent = f"link/{i}"
    start = time.perf_counter()
    rig = Rig.from_dict(doc)
    # Resolving each frame through all its ancestors took minutes (50 million products).
    assert time.perf_counter() - start < 20.0
    lidar = rig.vehicle_from["lidar"].translation
    end = rig.vehicle_from["link/9999"].translation
    assert (end - lidar) @ rig.vehicle_from["lidar"].rotation[:, 0] == pytest.approx(10.0)


def test_a_cycle_in_a_long_chain_is_named_briefly() -> None:
    doc = copy.deepcopy(GOOD)
    for i in range(1000):
        parent = f"loop/{(i + 1) % 1000}"
        doc["frames"][f"loop/{i}"] = frame(parent, [0.0, 0.0, 0.0])
    with pytest.raises(CalibrationError, match=r"frames\.loop/0: not connected .* is a cycle") as e:
        Rig.from_dict(doc, source="net")
    assert "loop/0 -> loop/1 -> loop/2 -> loop/3 -> ... ->" in str(e.value)
    assert len(str(e.value)) < 300


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=6)
            | st.sampled_from(["k", "width", "height", "distortion", "model", "rotation"])
            | st.sampled_from(["translation", "parent", "matrix", "lever_arm_m", "lidar", "front"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=40,
)
TOP = ["frames", "cameras", "gnss", "time_offsets_ns", "warnings", "source", "version"]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.dictionaries(st.sampled_from(TOP), json_values, max_size=7))
def test_any_json_document_is_a_rig_or_a_calibration_error(doc: dict[str, Any]) -> None:
    try:
        Rig.from_dict(doc, source="fuzz")
    except CalibrationError as e:
        assert str(e).startswith("fuzz: ")


PLACES = [
    ("frames", "lidar"),
    ("frames", "lidar", "rotation"),
    ("frames", "lidar", "translation"),
    ("frames", "camera/front", "parent"),
    ("cameras", "front"),
    ("cameras", "front", "k"),
    ("cameras", "front", "width"),
    ("cameras", "front", "distortion"),
    ("gnss", "lever_arm_m"),
    ("time_offsets_ns", "lidar"),
]


@FUZZ
@given(st.sampled_from(PLACES), json_values | st.integers(0, 5000).map(nested))
def test_any_value_anywhere_in_a_valid_rig_is_a_rig_or_a_calibration_error(
    place: tuple[str, ...], value: Any
) -> None:
    doc = copy.deepcopy(GOOD)
    node = doc
    for key in place[:-1]:
        node = node.setdefault(key, {})
    node[place[-1]] = value
    try:
        Rig.from_dict(doc, source="fuzz")
    except CalibrationError as e:
        assert str(e).startswith("fuzz: ")
