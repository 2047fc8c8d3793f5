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


Polygon = list[tuple[float, float]]


def _clip_polygon(subject: Polygon, clip: Polygon) -> Polygon:
    """Sutherland-Hodgman: ``subject`` clipped by the convex counter-clockwise ``clip``. In
    Python floats: for polygons of a few corners, numpy's per-call cost is most of the time."""
    out = subject
    for i in range(len(clip)):
        if not out:
            break
        ax, ay = clip[i]
        bx, by = clip[(i + 1) % len(clip)]
        ex, ey = bx - ax, by - ay
        side = [ex * (py - ay) - ey * (px - ax) for px, py in out]
        pts: Polygon = []
        for k, (px, py) in enumerate(out):
            qx, qy = out[(k + 1) % len(out)]
            sp, sq = side[k], side[(k + 1) % len(out)]
            if sp >= 0:
                pts.append((px, py))
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                pts.append((px + (qx - px) * t, py + (qy - py) * t))
        out = pts
    return out


def _polygon_area(poly: Polygon) -> float:
    if len(poly) < 3:
        return 0.0
    twice = 0.0
    for k, (x, y) in enumerate(poly):
        nx, ny = poly[(k + 1) % len(poly)]
        twice += x * ny - y * nx
    return 0.5 * abs(twice)


class BoxLike(Protocol):
    """Anything with a box: centre (m), size (length, width, height; m), yaw (rad)."""

    @property
    def center(self) -> tuple[float, float, float]: ...
    @property
    def size(self) -> tuple[float, float, float]: ...
    @property
    def yaw(self) -> float: ...


def _corners(box: BoxLike) -> Polygon:
    """`bev_corners` in Python floats, for the clipping (numpy's per-call cost is most of the
    time for four corners)."""
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    hl, hw = 0.5 * float(box.size[0]), 0.5 * float(box.size[1])
    cx, cy = float(box.center[0]), float(box.center[1])
    return [
        (x * c - y * s + cx, x * s + y * c + cy)
        for x, y in ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))
    ]


def bev_iou(a: BoxLike, b: BoxLike) -> float:
    """Intersection over union of the two boxes' rotated BEV footprints (0 when either is empty)."""
    pa, pb = _corners(a), _corners(b)
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
    # Every pair's BEV centre distance and bounding-circle reach at once: only pairs closer than
    # either can be duplicates, so each detection is tested against those neighbours alone.
    xy = np.array([d.center[:2] for d in detections], dtype=np.float64).reshape(-1, 2)
    radius = 0.5 * np.hypot(*np.array([d.size[:2] for d in detections]).reshape(-1, 2).T)
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    near = (dist < min_center_distance_m) | (dist < radius[:, None] + radius[None, :])
    np.fill_diagonal(near, False)
    pairs = np.argwhere(near).tolist()
    neighbours: list[list[int]] = [[] for _ in detections]
    for i, j in pairs:
        neighbours[i].append(j)
    kept: list[int] = []
    is_kept = [False] * len(detections)
    for i in order:
        det = detections[i]
        duplicate = False
        for j in neighbours[i]:
            if not is_kept[j]:
                continue
            other = detections[j]
            if not class_agnostic and other.label != det.label:
                continue
            # Footprints whose bounding circles do not touch cannot overlap: the clipping is
            # left to pairs whose centres are not already too close.
            if dist[i, j] < min_center_distance_m or bev_iou(det, other) > iou_threshold:
                duplicate = True
                break
        if not duplicate:
            kept.append(i)
            is_kept[i] = True
    return [detections[i] for i in kept]
