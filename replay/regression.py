"""Regression replays: detections of a replay compared with a stored reference, within tolerances.

A reference is a JSON Lines file of DetectionLists (perception.msgs.jsonl), written on purpose
by `update_reference` (never as a side effect of a comparison). `compare_detections` compares a
run with it field by field, walking the message tables of perception.msgs.schema, and returns
every difference beyond the tolerances, so a change that moves detections is seen.

Matching: DetectionLists pair by position (list i with list i; their counts must be equal).
Within a pair, detections pair greedily in reference order, each reference detection with the
nearest (centre distance, metres) unpaired actual detection of the same label, so a reordering
alone is not a difference; unpaired detections on either side are differences (counts exact).

Fields are named by their key paths in the JSON document (`header.stamp_ns`, `center`,
`camera_box.x1`). Tolerances (absolute): `center` and `size` components (m), `yaw` (rad,
modulo pi: a box turned half a turn is the same box), `score`, `latitude_deg` and
`longitude_deg` (deg), the `camera_box` corners (px). Every other field of the tables is exact
(a field added to a message is compared without a change here): the header, `label`,
`sources`, `degraded`, `valid`, `schema_version`, detection counts... Ignored fields (default
`timings_ns`, `latency_ns` and `budget_ok`: they depend on the machine's speed) are not compared
and are not written to references (they read back as their defaults).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perception.errors import SchemaError, SourceError
from perception.msgs.jsonl import read_jsonl, to_document
from perception.msgs.schema import DETECTION, DETECTION_LIST, Kind, Schema
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
DEFAULT_IGNORED = frozenset({"timings_ns", "latency_ns", "budget_ok"})

# Detection fields compared within a tolerance (key path -> Tolerances attribute); the other
# fields of the tables are compared exactly.
_TOLERANCES = {
    "center": "center_m",
    "size": "size_m",
    "yaw": "yaw_rad",
    "score": "score",
    "latitude_deg": "latlon_deg",
    "longitude_deg": "latlon_deg",
    **{f"camera_box.{c}": "camera_box_px" for c in ("x1", "y1", "x2", "y2")},
}
_MODULO_PI = frozenset({"yaw"})


def _paths(schema: Schema, prefix: str = "") -> Iterator[str]:
    """Key paths of a table's fields, nested messages included (tuples of messages not)."""
    for f in schema.fields:
        path = prefix + f.name
        yield path
        if f.kind is Kind.MESSAGE and f.schema is not None:
            yield from _paths(f.schema, path + ".")


_LIST_PATHS = frozenset(_paths(DETECTION_LIST)) - {"detections"}
_DETECTION_PATHS = frozenset(_paths(DETECTION))


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances: `center_m`, `size_m` (metres, per component), `yaw_rad` (radians,
    modulo pi), `score` (score units), `latlon_deg` (degrees), `camera_box_px` (pixels, per
    corner coordinate). `ignored` names fields left out of the comparison by their key paths:
    DetectionList fields (`timings_ns`, `latency_ns`, `budget_ok`, `degraded`, `valid`,
    `header`, `header.stamp_ns`, `schema_version`, ...) or detection fields (`score`, `center`,
    `size`, `yaw`, `sources`, `latitude_deg`, `camera_box`, `camera_box.x1`, ...). Labels and
    counts are always compared.

    Raises ValueError for a negative tolerance or an ignored name no table has."""

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
        unknown = sorted(set(self.ignored) - _LIST_PATHS - _DETECTION_PATHS)
        if unknown:
            known = sorted(_LIST_PATHS | _DETECTION_PATHS)
            raise ValueError(f"Tolerances.ignored: unknown field(s) {unknown} (known: {known})")


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


# Reports one difference: key path, actual, reference, tolerance (None: exact).
_Report = Callable[[str, Any, Any, float | None], None]


def _compare_fields(
    schema: Schema, a: Any, r: Any, tol: Tolerances, report: _Report, *, prefix: str = ""
) -> None:
    """Report every field of the table that differs between `a` and `r` beyond its tolerance
    (tuples of messages are left to the caller)."""
    for f in schema.fields:
        path = prefix + f.name
        if path in tol.ignored or f.kind is Kind.MESSAGES:
            continue
        av, rv = getattr(a, f.name), getattr(r, f.name)
        if f.kind is Kind.MESSAGE and f.schema is not None and av is not None and rv is not None:
            _compare_fields(f.schema, av, rv, tol, report, prefix=path + ".")
            continue
        tolerance_name = _TOLERANCES.get(path)
        if tolerance_name is None or av is None or rv is None:
            if av != rv:
                report(path, av, rv, None)
            continue
        limit: float = getattr(tol, tolerance_name)
        if path in _MODULO_PI:
            error = _yaw_diff(av, rv)
        elif isinstance(av, tuple):
            error = _max_abs(av, rv)
        else:
            error = abs(av - rv)
        if error > limit:
            report(path, av, rv, limit)


def _compare_list(
    a: DetectionList, r: DetectionList, index: int, tol: Tolerances
) -> list[Difference]:
    out: list[Difference] = []
    stamp = r.header.stamp_ns

    def at(detection: int | None) -> _Report:
        def report(name: str, av: Any, rv: Any, limit: float | None) -> None:
            out.append(Difference(index, stamp, detection, name, av, rv, limit))

        return report

    _compare_fields(DETECTION_LIST, a, r, tol, at(None))
    if len(a.detections) != len(r.detections):
        out.append(Difference(index, stamp, None, "count", len(a.detections), len(r.detections)))
    pairs = _pair(a.detections, r.detections)
    for j, (ref, partner) in enumerate(zip(r.detections, pairs, strict=True)):
        if partner is None:
            out.append(Difference(index, stamp, j, "missing", None, ref.label))
            continue
        _compare_fields(DETECTION, a.detections[partner], ref, tol, at(j))
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
        # References leave out the ignored fields that have defaults (see update_reference).
        return list(read_jsonl(path, DetectionList, fill_defaults=True))
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
    """Write (replace) the reference at `path` on purpose: one JSON document per DetectionList
    (perception.msgs.jsonl), the `ignored` top-level fields that have defaults left out so the
    file does not change with the machine's speed. Returns the number of lists written.
    Raises ReplayError naming the file when unwritable or a list is invalid."""
    path = Path(path)
    # The version is the document's `schema_version`, which every record carries.
    drop = set(ignored) & (set(DETECTION_LIST.defaults()) - {"schema_version"})
    lines = []
    for dl in detections:
        try:
            doc = to_document(dl)
        except SchemaError as e:
            raise ReplayError(f"{path}: cannot write reference ({e})") from e
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
