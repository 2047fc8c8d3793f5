"""DetectionList <-> JSON documents (JSON Lines files: one DetectionList per line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from perception.errors import SourceError
from perception.msgs.types import CameraBox, Detection3D, DetectionList, Header

__all__ = ["detection_list_from_dict", "detection_list_to_dict", "read_jsonl", "write_jsonl_line"]


def detection_list_to_dict(dl: DetectionList) -> dict[str, Any]:
    """The JSON Lines record of DESIGN's output format (times in ns, lengths in m, yaw in rad)."""
    return {
        "stamp_ns": dl.header.stamp_ns,
        "sequence": dl.header.seq,
        "stream": dl.header.stream,
        "frame_id": dl.header.frame_id,
        "detections": [_detection_to_dict(d) for d in dl.detections],
        "timings": dict(dl.timings_ns),
        "latency_ns": dl.latency_ns,
        "budget_ok": dl.budget_ok,
        "degraded": list(dl.degraded),
        "valid": dl.valid,
        "schema_version": dl.schema_version,
    }


def _detection_to_dict(d: Detection3D) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": d.label,
        "score": d.score,
        "center": list(d.center),
        "size": list(d.size),
        "yaw": d.yaw,
        "sources": list(d.sources),
    }
    if d.latitude_deg is not None and d.longitude_deg is not None:
        out["latitude"] = d.latitude_deg
        out["longitude"] = d.longitude_deg
    if d.camera_box is not None:
        b = d.camera_box
        out["camera_box"] = {"camera": b.camera, "x1": b.x1, "y1": b.y1, "x2": b.x2, "y2": b.y2}
    return out


def detection_list_from_dict(doc: dict[str, Any]) -> DetectionList:
    """Inverse of detection_list_to_dict; KeyError/TypeError on malformed records."""
    dets = []
    for d in doc["detections"]:
        box = d.get("camera_box")
        dets.append(
            Detection3D(
                label=d["label"],
                score=float(d["score"]),
                center=(float(d["center"][0]), float(d["center"][1]), float(d["center"][2])),
                size=(float(d["size"][0]), float(d["size"][1]), float(d["size"][2])),
                yaw=float(d["yaw"]),
                sources=tuple(d.get("sources", ())),
                latitude_deg=d.get("latitude"),
                longitude_deg=d.get("longitude"),
                camera_box=None if box is None else CameraBox(**box),
            )
        )
    return DetectionList(
        header=Header(
            doc.get("stream", "detections"),
            int(doc["sequence"]),
            int(doc["stamp_ns"]),
            doc.get("frame_id", "vehicle"),
        ),
        detections=tuple(dets),
        timings_ns={k: int(v) for k, v in doc.get("timings", {}).items()},
        latency_ns=int(doc.get("latency_ns", 0)),
        budget_ok=bool(doc.get("budget_ok", True)),
        degraded=tuple(doc.get("degraded", ())),
        valid=bool(doc.get("valid", True)),
        schema_version=int(doc.get("schema_version", 1)),
    )


def write_jsonl_line(stream: TextIO, dl: DetectionList) -> None:
    stream.write(json.dumps(detection_list_to_dict(dl), separators=(",", ":")) + "\n")


def read_jsonl(path: Path) -> Iterator[DetectionList]:
    """DetectionLists of a JSON Lines file; SourceError names the file and line when malformed."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise SourceError(f"{path}: cannot read detections ({e.strerror})") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield detection_list_from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise SourceError(f"{path}:{lineno}: not a DetectionList record ({e})") from e
