"""The learned engine's detections as messages, and the ensemble of both fusions.

The ensemble merges the geometric fusion's camera-confirmed boxes with the learned engine's:
a pair of the same class whose BEV centres lie within the class's merge distance is one object
(each detection takes part in at most one pair, best scores first, so nothing is counted twice).
The merged box is the score-weighted mean of the centres and sizes (weighted box fusion), with
the score of either finding it, ``1 - (1 - s1)(1 - s2)``; it keeps the camera box, the union
of the sources and the learned engine's measure of the camera's contribution. Its heading is
the learned one refined by the geometric outline fit where the two agree within
``YAW_AGREEMENT_RAD`` (the fit is the finer measurement: about 1 degree median against the
learned head's 3 on synthetic drives), else the learned one (the geometric heading falls back to
the lane when little of the outline is seen, and then they disagree). A box only one fusion
found is kept as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from perception.msgs.types import Detection3D

__all__ = ["MERGE_DISTANCE_M", "YAW_AGREEMENT_RAD", "learned_detections", "merge_ensemble"]

#: BEV centre distance (m) within which two fusions' boxes of a class are one object.
MERGE_DISTANCE_M: Mapping[str, float] = {"Car": 1.5, "Pedestrian": 0.6, "Cyclist": 0.8}
#: Headings (mod pi: a box's front and back look alike to an outline fit) this close are two
#: measurements of one heading; further apart, the geometric one is taken for the lane prior.
YAW_AGREEMENT_RAD = math.radians(15.0)


def learned_detections(
    rows: npt.NDArray[np.float32],
    camera_free_score: npt.NDArray[np.float32],
    classes: Sequence[str],
    *,
    camera_seen: bool,
    camera_contribution: float,
) -> list[Detection3D]:
    """Detections of the learned engine's rows (x, y, z, l, w, h, yaw, vx, vy, score, class).
    The camera is among a detection's sources when a camera was present (``camera_seen``) and
    removing its features lowers the score by more than ``camera_contribution`` (attribution in
    the same engine call); the lidar always is (no points, no pillar, no detection). Each
    detection carries that difference as its ``camera_contribution`` (None where the engine
    did not measure it)."""
    out = []
    for row, free in zip(rows, camera_free_score, strict=True):
        score = float(row[9])
        gain = score - float(free)
        camera = camera_seen and math.isfinite(gain) and gain > camera_contribution
        out.append(
            Detection3D(
                label=classes[int(row[10])],
                score=score,
                center=(float(row[0]), float(row[1]), float(row[2])),
                size=(float(row[3]), float(row[4]), float(row[5])),
                yaw=float(row[6]),
                sources=("camera", "lidar") if camera else ("lidar",),
                camera_contribution=min(max(gain, -1.0), 1.0) if math.isfinite(gain) else None,
            )
        )
    return out


def _weighted(
    a: tuple[float, float, float], b: tuple[float, float, float], wa: float, wb: float
) -> tuple[float, float, float]:
    total = wa + wb if wa + wb > 0 else 1.0
    x, y, z = ((p * wa + q * wb) / total for p, q in zip(a, b, strict=True))
    return (x, y, z)


def _merged_yaw(learned: float, geometric: float) -> float:
    """The learned heading, refined by the geometric one when they agree (mod pi)."""
    diff = (geometric - learned + math.pi / 2) % math.pi - math.pi / 2
    return learned + diff if abs(diff) <= YAW_AGREEMENT_RAD else learned


def merge_ensemble(
    geometric: Sequence[Detection3D],
    learned: Sequence[Detection3D],
    *,
    distance_m: Mapping[str, float] = MERGE_DISTANCE_M,
) -> list[Detection3D]:
    """The ensemble of the two fusions' detections (see the module docstring), best first."""
    taken: set[int] = set()
    out: list[Detection3D] = []
    for det in sorted(learned, key=lambda d: -d.score):
        limit = distance_m.get(det.label, 1.0)
        best, best_d = -1, limit
        for j, other in enumerate(geometric):
            if j in taken or other.label != det.label:
                continue
            d = math.hypot(det.center[0] - other.center[0], det.center[1] - other.center[1])
            if d <= best_d:
                best, best_d = j, d
        if best < 0:
            out.append(det)
            continue
        taken.add(best)
        other = geometric[best]
        centre = _weighted(det.center, other.center, det.score, other.score)
        size = _weighted(det.size, other.size, det.score, other.score)
        out.append(
            replace(
                other,
                score=1.0 - (1.0 - det.score) * (1.0 - other.score),
                center=centre,
                size=size,
                yaw=_merged_yaw(det.yaw, other.yaw),
                sources=tuple(sorted(set(det.sources) | set(other.sources))),
                camera_contribution=det.camera_contribution,
            )
        )
    out += [g for j, g in enumerate(geometric) if j not in taken]
    return sorted(out, key=lambda d: -d.score)
