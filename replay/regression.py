"""Regression replays: detections of a replay compared with a stored reference, within tolerances.

A reference is a JSON Lines file of DetectionLists (perception.msgs.jsonl), written on purpose
by `update_reference` (never as a side effect of a comparison). `compare_detections` compares a
run with it field by field and returns every difference beyond the tolerances, so a change that
moves detections is seen.

Matching: DetectionLists pair by position (list i with list i; their counts must be equal).
Within a pair, detections pair greedily in reference order, each reference detection with the
nearest (centre distance, metres) unpaired actual detection of the same label, so a reordering
alone is not a difference; unpaired detections on either side are differences (counts exact).

Fields and their tolerances (absolute): centre and size components (m), yaw (rad, modulo pi:
a box turned half a turn is the same box), score, latitude/longitude (deg), camera box corners
(px). Everything else is exact: stamp, sequence, stream, frame_id, label, sources, degraded,
valid, budget_ok, schema_version, detection counts. Ignored fields (default `timings`,
`latency_ns` and `budget_ok`: they depend on the machine's speed) are not compared and are not
written to references.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.errors import SourceError
from perception.msgs.jsonl import detection_list_to_dict, read_jsonl
from perception.msgs.types import Detection3D, DetectionList
from replay.errors import ReplayError

__all__ = [
    "DEFAULT_IGNORED",
    "Difference",
    "Tolerances",
    "compare_detections",
    "compare_with_reference",
    "format_differences",
    "load_reference",
    "update_reference",
]

#: Fields that depend on the machine's speed, not on the detections.
DEFAULT_IGNORED = frozenset({"timings", "latency_ns", "budget_ok"})

# DetectionList fields compared exactly (names as in the JSON Lines record).
_LIST_FIELDS = ("stamp_ns", "sequence", "stream", "frame_id", "degraded", "valid", "budget_ok")
_LIST_FIELDS_ALL = (*_LIST_FIELDS, "schema_version", "timings", "latency_ns")


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances: `center_m`, `size_m` (metres, per component), `yaw_rad` (radians,
    modulo pi), `score` (score units), `latlon_deg` (degrees), `camera_box_px` (pixels, per
    corner coordinate). `ignored` names fields left out of the comparison: DetectionList record
    keys (`timings`, `latency_ns`, `budget_ok`, `degraded`, `valid`, `stream`, `frame_id`,
    `stamp_ns`, `sequence`, `schema_version`) or detection keys (`score`, `center`, `size`, `yaw`,
    `sources`, `latlon`, `camera_box`). Labels and counts are always compared."""

    center_m: float = 0.05
    size_m: float = 0.05
    yaw_rad: float = 0.02
    score: float = 0.01
    latlon_deg: float = 1e-6
    camera_box_px: float = 0.5
    ignored: frozenset[str] = field(default_factory=lambda: DEFAULT_IGNORED)

    def __post_init__(self) -> None:
        for name in ("center_m", "size_m", "yaw_rad", "score", "latlon_deg", "camera_box_px"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"tolerance {name} must be >= 0, got {value}")


@dataclass(frozen=True)
class Difference:
    """One difference. `index` is the DetectionList's position (None: the lists' count);
    `detection` the reference detection's position in it (None: a list-level field or an
    unpaired actual detection); `field` the compared field (e.g. `center`, `count`); `actual`
    and `reference` the two values; `tolerance` the one applied (None: exact)."""

    index: int | None
    stamp_ns: int | None
    detection: int | None
    field: str
    actual: Any
    reference: Any
    tolerance: float | None = None

    def __str__(self) -> str:
        where = "run" if self.index is None else f"list {self.index}"
        if self.stamp_ns is not None:
            where += f" (stamp {self.stamp_ns} ns)"
        if self.detection is not None:
            where += f" detection {self.detection}"
        tol = "" if self.tolerance is None else f" (tolerance {self.tolerance:g})"
        return f"{where}: {self.field}: actual {self.actual!r} != reference {self.reference!r}{tol}"


def _yaw_diff(a: float, b: float) -> float:
    """|a - b| modulo pi (radians), in [0, pi/2]."""
    return abs((a - b + math.pi / 2) % math.pi - math.pi / 2)


def _max_abs(a: Sequence[float], b: Sequence[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def _pair(actual: Sequence[Detection3D], reference: Sequence[Detection3D]) -> list[int | None]:
    """For each reference detection, the index of its actual partner (None: unpaired)."""
    free = set(range(len(actual)))
    pairs: list[int | None] = []
    for ref in reference:
        best: int | None = None
        best_d = math.inf
        for i in sorted(free):
            if actual[i].label != ref.label:
                continue
            d = math.dist(actual[i].center, ref.center)
            if d < best_d:
                best, best_d = i, d
        if best is not None:
            free.discard(best)
        pairs.append(best)
    return pairs


def _compare_detection(
    a: Detection3D, r: Detection3D, tol: Tolerances, where: tuple[int, int, int]
) -> list[Difference]:
    index, stamp, det = where
    out: list[Difference] = []

    def diff(name: str, av: Any, rv: Any, t: float | None = None) -> None:
        out.append(Difference(index, stamp, det, name, av, rv, t))

    ign = tol.ignored
    if "center" not in ign and _max_abs(a.center, r.center) > tol.center_m:
        diff("center", a.center, r.center, tol.center_m)
    if "size" not in ign and _max_abs(a.size, r.size) > tol.size_m:
        diff("size", a.size, r.size, tol.size_m)
    if "yaw" not in ign and _yaw_diff(a.yaw, r.yaw) > tol.yaw_rad:
        diff("yaw", a.yaw, r.yaw, tol.yaw_rad)
    if "score" not in ign and abs(a.score - r.score) > tol.score:
        diff("score", a.score, r.score, tol.score)
    if "sources" not in ign and a.sources != r.sources:
        diff("sources", a.sources, r.sources)
    if "latlon" not in ign:
        al = (a.latitude_deg, a.longitude_deg)
        rl = (r.latitude_deg, r.longitude_deg)
        if (None in al) != (None in rl):
            diff("latlon", al, rl)
        elif None not in al and _max_abs(al, rl) > tol.latlon_deg:  # type: ignore[arg-type]
            diff("latlon", al, rl, tol.latlon_deg)
    if "camera_box" not in ign:
        ab, rb = a.camera_box, r.camera_box
        if (ab is None) != (rb is None) or (
            ab is not None and rb is not None and ab.camera != rb.camera
        ):
            diff("camera_box", ab, rb)
        elif ab is not None and rb is not None:
            ac = (ab.x1, ab.y1, ab.x2, ab.y2)
            rc = (rb.x1, rb.y1, rb.x2, rb.y2)
            if _max_abs(ac, rc) > tol.camera_box_px:
                diff("camera_box", ac, rc, tol.camera_box_px)
    return out


def _compare_list(
    a: DetectionList, r: DetectionList, index: int, tol: Tolerances
) -> list[Difference]:
    out: list[Difference] = []
    stamp = r.header.stamp_ns
    ad, rd = detection_list_to_dict(a), detection_list_to_dict(r)
    for name in _LIST_FIELDS_ALL:
        if name not in tol.ignored and ad[name] != rd[name]:
            out.append(Difference(index, stamp, None, name, ad[name], rd[name]))
    if len(a.detections) != len(r.detections):
        out.append(Difference(index, stamp, None, "count", len(a.detections), len(r.detections)))
    pairs = _pair(a.detections, r.detections)
    for j, (ref, partner) in enumerate(zip(r.detections, pairs, strict=True)):
        if partner is None:
            out.append(Difference(index, stamp, j, "missing", None, ref.label))
            continue
        out += _compare_detection(a.detections[partner], ref, tol, (index, stamp, j))
    paired = {p for p in pairs if p is not None}
    for i, extra in enumerate(a.detections):
        if i not in paired:
            out.append(Difference(index, stamp, None, f"extra[{i}]", extra.label, None))
    return out


def compare_detections(
    actual: Sequence[DetectionList],
    reference: Sequence[DetectionList],
    tolerances: Tolerances | None = None,
) -> list[Difference]:
    """Every difference between a run and its reference beyond `tolerances` (default
    Tolerances()); empty when they agree. See the module docstring for the pairing rules."""
    tol = tolerances or Tolerances()
    out: list[Difference] = []
    if len(actual) != len(reference):
        out.append(Difference(None, None, None, "lists", len(actual), len(reference)))
    for index, (a, r) in enumerate(zip(actual, reference, strict=False)):
        out += _compare_list(a, r, index, tol)
    return out


def load_reference(path: Path) -> list[DetectionList]:
    """The DetectionLists of a reference file. Raises ReplayError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"{path}: reference does not exist (write it with update_reference)")
    try:
        return list(read_jsonl(path))
    except SourceError as e:
        raise ReplayError(str(e)) from e


def compare_with_reference(
    actual: Iterable[DetectionList], path: Path, tolerances: Tolerances | None = None
) -> list[Difference]:
    """`compare_detections` of `actual` with the reference file at `path`."""
    return compare_detections(list(actual), load_reference(path), tolerances)


def update_reference(
    path: Path, detections: Iterable[DetectionList], ignored: Iterable[str] = DEFAULT_IGNORED
) -> int:
    """Write (replace) the reference at `path` on purpose: one JSON line per DetectionList, the
    `ignored` list-level fields left out so the file does not change with the machine's speed.
    Returns the number of lists written. Raises ReplayError naming the file when unwritable."""
    path = Path(path)
    drop = set(ignored) & set(_LIST_FIELDS_ALL)
    lines = []
    for dl in detections:
        doc = detection_list_to_dict(dl)
        for name in drop:
            doc.pop(name, None)
        lines.append(json.dumps(doc, separators=(",", ":")) + "\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(path)
    except OSError as e:
        raise ReplayError(f"{path}: cannot write reference ({e.strerror})") from e
    return len(lines)


def format_differences(differences: Sequence[Difference], limit: int = 20) -> str:
    """A readable report: the first `limit` differences, one per line, and how many more."""
    if not differences:
        return "no differences"
    lines = [str(d) for d in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more")
    return f"{len(differences)} differences:\n" + "\n".join(lines)
