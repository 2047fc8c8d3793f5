"""Schema versions: the node writes version 2 and reads 1 and 2. A version 1 document (before
`Detection3D.camera_contribution`) reads as a current message with the field None, on the wire
and in JSON, so drives and runs recorded before it still replay and score; a version 1 document
that holds the newer field is refused naming it; an unknown version is refused naming the ones
read."""

from __future__ import annotations

import re
from typing import Any

import msgpack
import pytest

from perception.errors import SchemaError, WireError
from perception.msgs import wire
from perception.msgs.jsonl import from_document, to_document
from perception.msgs.types import (
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    CameraBox,
    Detection3D,
    DetectionList,
    Header,
)

LIST = DetectionList(
    Header("detections", 4, 1_000, "vehicle"),
    (
        Detection3D("Car", 0.9, (10.0, 1.0, -0.8), (4.0, 1.7, 1.5), 0.1, ("camera", "lidar"),
                    camera_box=CameraBox("front", 1.0, 2.0, 30.0, 40.0), camera_contribution=0.31),
        Detection3D("Pedestrian", 0.7, (8.0, -3.0, -0.9), (0.6, 0.6, 1.7), 0.0, ("lidar",),
                    camera_contribution=-0.02),
        Detection3D("unknown", 0.5, (20.0, 5.0, -0.5), (2.0, 2.0, 1.0), 0.0, ("lidar",)),
    ),
)  # fmt: skip
OLD = 1


def _as_version_1(detections: list[dict[str, Any]]) -> None:
    for det in detections:
        det.pop("camera_contribution")


def test_the_node_writes_the_current_version_and_reads_the_older_one() -> None:
    assert SCHEMA_VERSION == 2 and READABLE_SCHEMA_VERSIONS == (1, 2)
    doc = to_document(LIST)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert [d["camera_contribution"] for d in doc["detections"]] == [0.31, -0.02, None]
    assert from_document(doc) == LIST


def test_a_version_1_json_document_reads_with_the_new_field_none() -> None:
    doc = to_document(LIST)
    doc["schema_version"] = OLD
    _as_version_1(doc["detections"])
    read = from_document(doc)
    assert isinstance(read, DetectionList)
    assert read.schema_version == SCHEMA_VERSION
    assert [d.camera_contribution for d in read.detections] == [None, None, None]
    assert read.detections[0].camera_box == LIST.detections[0].camera_box
    assert read == DetectionList(
        LIST.header,
        tuple(Detection3D(**{**vars(d), "camera_contribution": None}) for d in LIST.detections),
    )
    # Read, it is a current message: it writes as version 2.
    assert to_document(read)["schema_version"] == SCHEMA_VERSION


def test_a_version_1_wire_message_reads_with_the_new_field_none() -> None:
    frames = wire.encode(LIST)
    doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    assert doc["version"] == SCHEMA_VERSION
    doc["version"] = OLD
    _as_version_1(doc["fields"]["detections"])
    topic, read = wire.decode([frames[0], msgpack.packb(doc, use_bin_type=True), *frames[2:]])
    assert topic == "detections"
    assert isinstance(read, DetectionList) and read.schema_version == SCHEMA_VERSION
    assert [d.camera_contribution for d in read.detections] == [None, None, None]
    assert [d.score for d in read.detections] == [d.score for d in LIST.detections]


def test_a_version_1_document_with_the_newer_field_is_refused_naming_it() -> None:
    doc = to_document(LIST)
    doc["schema_version"] = OLD
    problem = re.escape(
        "field 'detections[0].camera_contribution' is not in schema version 1 (added in version 2)"
    )
    with pytest.raises(SchemaError, match=problem):
        from_document(doc)
    frames = wire.encode(LIST)
    wire_doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    wire_doc["version"] = OLD
    bad = [frames[0], msgpack.packb(wire_doc, use_bin_type=True), *frames[2:]]
    with pytest.raises(WireError, match=problem.replace("'detections", "'fields.detections")):
        wire.decode(bad)


@pytest.mark.parametrize("version", [0, 3, 99])
def test_an_unknown_version_is_refused_naming_those_read(version: int) -> None:
    doc = to_document(LIST)
    doc["schema_version"] = version
    want = f"unsupported schema version {version} (this node reads versions 1 to 2)"
    with pytest.raises(SchemaError, match=re.escape(want)):
        from_document(doc)
    frames = wire.encode(LIST)
    wire_doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    wire_doc["version"] = version
    with pytest.raises(WireError, match=re.escape(want)):
        wire.decode([frames[0], msgpack.packb(wire_doc, use_bin_type=True), *frames[2:]])


def test_a_version_1_list_with_malformed_detections_gets_the_usual_errors() -> None:
    """The upgrade leaves what is not a map to the decoders: the same one-line errors."""
    doc = to_document(LIST)
    doc["schema_version"] = OLD
    doc["detections"] = ["car", {"label": "Car"}]
    with pytest.raises(SchemaError, match=r"detections\[0\]"):
        from_document(doc)
