"""Box geometry of the postprocess stage: rotated BEV footprints, their IoU, and duplicate
suppression. Vehicle frame (x forward, y left, z up), metres, radians."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from perception.msgs.types import Detection3D

__all__ = ["BoxLike", "bev_corners", "bev_iou", "suppress_duplicates"]

FloatArray = npt.NDArray[np.float64]


def bev_corners(center_xy: Sequence[float], length: float, width: float, yaw: float) -> FloatArray:
    """The 4 BEV corners (4 x 2, counter-clockwise) of a box with heading ``yaw`` (rad)."""
    c, s = math.cos(yaw), math.sin(yaw)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64) * [
        0.5 * length,
        0.5 * width,
    ]
    rot = np.array([[c, -s], [s, c]])
    out: FloatArray = half @ rot.T + np.asarray(center_xy[:2], dtype=np.float64)
    return out


def _clip_polygon(subject: FloatArray, clip: FloatArray) -> FloatArray:
    """Sutherland-Hodgman: ``subject`` clipped by the convex counter-clockwise ``clip``."""
    out = subject
    for i in range(len(clip)):
        if len(out) == 0:
            break
        a, b = clip[i], clip[(i + 1) % len(clip)]
        edge = b - a
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])
        nxt = np.roll(out, -1, axis=0)
        side_nxt = np.roll(side, -1)
        pts: list[FloatArray] = []
        for p, q, sp, sq in zip(out, nxt, side, side_nxt, strict=True):
            if sp >= 0:
                pts.append(p)
            if (sp >= 0) != (sq >= 0):
                pts.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(pts, dtype=np.float64).reshape(-1, 2)
    return out


def _polygon_area(poly: FloatArray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


class BoxLike(Protocol):
    """Anything with a box: centre (m), size (length, width, height; m), yaw (rad)."""

    @property
    def center(self) -> tuple[float, float, float]: ...
    @property
    def size(self) -> tuple[float, float, float]: ...
    @property
    def yaw(self) -> float: ...


def bev_iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of the two boxes' rotated BEV footprints (0 when either is empty)."""
    pa = bev_corners(a.center, a.size[0], a.size[1], a.yaw)
    pb = bev_corners(b.center, b.size[0], b.size[1], b.yaw)
    area_a, area_b = _polygon_area(pa), _polygon_area(pb)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = _polygon_area(_clip_polygon(pa, pb))
    return inter / (area_a + area_b - inter)


def suppress_duplicates(
    detections: Sequence[Detection3D],
    *,
    iou_threshold: float = 0.3,
    min_center_distance_m: float = 0.5,
    class_agnostic: bool = True,
) -> list[Detection3D]:
    """Greedy BEV non-maximum suppression (highest score first, ties by input order).

    A detection is dropped when a kept one overlaps it with BEV IoU above ``iou_threshold`` or has
    its centre within ``min_center_distance_m`` (BEV). Duplicates arise when several cameras or
    2D boxes see the same object; by default labels are ignored (``class_agnostic``) because two
    solid objects cannot overlap and a COCO detector often boxes one car as both "car" and
    "truck". Returns the kept detections in descending score order.
    Raises ValueError on a negative threshold.
    """
    if iou_threshold < 0 or min_center_distance_m < 0:
        raise ValueError("iou_threshold and min_center_distance_m must be >= 0")
    order = sorted(range(len(detections)), key=lambda i: (-detections[i].score, i))
    kept: list[Detection3D] = []
    for i in order:
        det = detections[i]
        duplicate = False
        for other in kept:
            if not class_agnostic and other.label != det.label:
                continue
            dist = math.hypot(det.center[0] - other.center[0], det.center[1] - other.center[1])
            if dist < min_center_distance_m:
                duplicate = True
                break
            # Footprints whose bounding circles do not touch cannot overlap: skip the clipping.
            reach = 0.5 * (math.hypot(*det.size[:2]) + math.hypot(*other.size[:2]))
            if dist < reach and bev_iou(det, other) > iou_threshold:
                duplicate = True
                break
        if not duplicate:
            kept.append(det)
    return kept
