"""Objects seen by the lidar alone: clusters of the lidar encoder's BEV grid, fitted with boxes.

The camera path (2D box -> fusion engine) finds only what a camera detected. Everything else
that stands on the ground - outside every camera's view, or missed by the detector - comes from
here, like the Euclidean-clustering + shape-fitting branch of Autoware's lidar pipeline:

1. the returns between `min_height_m` and `max_height_m` above the ground plane go through the
   lidar encoder (the highest return per 0.2 m BEV cell, as height above the ground);
2. cells that reach `min_top_m` are joined across one-cell gaps (sparse far returns) and split
   into 8-connected components;
3. each component's points get a rectangle by the closeness criterion of Zhang et al., "Efficient
   L-Shape Fitting for Vehicle Detection Using Laser Scanners" (IV 2017): a search over headings
   for the rectangle whose two nearest edges the points hug, which is right for the one or two
   faces a lidar sees of an object, where a minimum-area rectangle is not;
4. components longer than `max_extent_m` are structure (walls, buildings, hedges), components
   whose lowest return is high above the ground are overhangs (tree crowns, signs): both dropped;
5. components already explained by a camera-fused detection are dropped.

The objects are labelled `unknown`, as Autoware labels its clustering branch: classes come from
the camera path. Shape alone does not tell a car from a hedge on real scans - on the KITTI frames
here, hedge segments fitted car-sized rectangles with car heights, and the spread of the returns
about the fitted edges overlapped (0.27-0.45 m hedges, 0.15-0.29 m real cars) - so a lidar-only
`car` would be a guess. The box is what the lidar saw, not completed with a class prior.

Frames and units: vehicle frame (x forward, y left, z up), metres, radians.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from engines.factory import EngineFactory
from engines.lidar.config import OBSTACLE_CONFIG
from engines.lidar.runner import LidarEncoderRunner
from perception.config import LidarObjectConfig
from perception.msgs.types import Detection3D
from perception.pipeline.ground import GroundPlane

__all__ = [
    "UNKNOWN_LABEL",
    "LidarClusters",
    "LidarObjectConfig",
    "LidarObjects",
    "fit_rectangle",
]

#: The label of every lidar-only object (see the module docstring for why).
UNKNOWN_LABEL = "unknown"

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Headings searched by the rectangle fit: a rectangle repeats every 90 degrees.
_HEADINGS = np.deg2rad(np.arange(0.0, 90.0, 2.0))
# The refinement around the best coarse heading.
_REFINE_OFFSETS = np.deg2rad(np.arange(-2.0, 2.01, 0.25))


def _axes(headings: FloatArray) -> FloatArray:
    """The unit vectors along, then across, each heading: 2 x 2T (one product gives both)."""
    return np.hstack(
        [
            np.stack([np.cos(headings), np.sin(headings)]),
            np.stack([-np.sin(headings), np.cos(headings)]),
        ]
    )


# The coarse headings' axes, and each coarse heading's refined headings and their axes, computed
# once.
_HEADING_AXES = _axes(_HEADINGS)
_REFINED = [float(t) + _REFINE_OFFSETS for t in _HEADINGS]
_REFINED_AXES = [_axes(h) for h in _REFINED]
# Points closer than this to an edge count as on it (the closeness criterion's d0, metres).
_CLOSENESS_FLOOR_M = 0.01
# The rectangle fit uses at most this many points of a cluster (stride-sampled).
_FIT_MAX_POINTS = 400
# Clusters are fitted together in groups of about this many points.
_FIT_GROUP_POINTS = 1024


Rectangle = tuple[tuple[float, float], float, float, float]


def fit_rectangle(xy: FloatArray) -> Rectangle:
    """The rectangle the points hug (closeness criterion, Zhang et al. 2017).

    Args:
        xy: N x 2 points (N >= 1), metres.

    Returns:
        ``((cx, cy), length, width, yaw)``: centre, the longer and shorter side, and the heading
        of the longer side in (-pi/2, pi/2].
    """
    return fit_rectangles([xy])[0]


def fit_rectangles(xys: Sequence[FloatArray]) -> list[Rectangle]:
    """`fit_rectangle` of each of many point sets (each N_i x 2, N_i >= 1), at once. The
    products with the headings run over all the sets together: a sweep has tens of clusters,
    and fitting one at a time was mostly numpy's cost per call. The results are those of one
    at a time to the bit (each set's edges and sums over its points, and its products with its
    own refined headings, are still taken per set, as before)."""
    out: list[Rectangle] = []
    # In groups of about _FIT_GROUP_POINTS points: the headings' tables of a group stay in
    # the cache (those of all of a sweep's clusters at once would not).
    group: list[FloatArray] = []
    size = 0
    for xy in xys:
        if group and size + len(xy) > _FIT_GROUP_POINTS:
            out += _fit_group(group)
            group, size = [], 0
        group.append(xy)
        size += len(xy)
    if group:
        out += _fit_group(group)
    return out


def _fit_group(xys: Sequence[FloatArray]) -> list[Rectangle]:
    starts = np.cumsum([0, *(len(xy) for xy in xys)])
    points = np.concatenate(xys)
    # Coarse: every set against the one table of headings, along and across (one product).
    score = _closeness_sums(points @ _HEADING_AXES, starts)
    coarse = np.argmax(_along_plus_across(score), axis=1).tolist()
    # A 2-degree step leaves up to 1 degree of error: 9 cm of extent across a 5 m side. Each
    # set is refined around its own best coarse heading.
    refined = np.concatenate([xy @ _REFINED_AXES[k] for xy, k in zip(xys, coarse, strict=True)])
    best = np.argmax(_along_plus_across(_closeness_sums(refined, starts)), axis=1).tolist()
    thetas = [float(_REFINED[k][b]) for k, b in zip(coarse, best, strict=True)]
    fitted = list(zip(xys, thetas, strict=True))
    a = np.concatenate([xy @ np.array([math.cos(t), math.sin(t)]) for xy, t in fitted])
    b = np.concatenate([xy @ np.array([-math.sin(t), math.cos(t)]) for xy, t in fitted])
    a_lo, a_hi = np.minimum.reduceat(a, starts[:-1]), np.maximum.reduceat(a, starts[:-1])
    b_lo, b_hi = np.minimum.reduceat(b, starts[:-1]), np.maximum.reduceat(b, starts[:-1])
    out: list[Rectangle] = []
    for theta, lo_a, hi_a, lo_b, hi_b in zip(
        thetas, a_lo.tolist(), a_hi.tolist(), b_lo.tolist(), b_hi.tolist(), strict=True
    ):
        half_a, half_b = (hi_a - lo_a) / 2, (hi_b - lo_b) / 2
        mid_a, mid_b = (hi_a + lo_a) / 2, (hi_b + lo_b) / 2
        cx = mid_a * math.cos(theta) - mid_b * math.sin(theta)
        cy = mid_a * math.sin(theta) + mid_b * math.cos(theta)
        if half_a >= half_b:
            out.append(((cx, cy), 2 * half_a, 2 * half_b, _wrap_half(theta)))
        else:
            out.append(((cx, cy), 2 * half_b, 2 * half_a, _wrap_half(theta + math.pi / 2)))
    return out


def _along_plus_across(score: FloatArray) -> FloatArray:
    """Each heading's score along plus its score across (``score``'s two halves of columns)."""
    half = score.shape[1] // 2
    out: FloatArray = score[:, :half] + score[:, half:]
    return out


def _closeness_sums(coord: FloatArray, starts: npt.NDArray[np.int64]) -> FloatArray:
    """Per set of points (rows ``starts[i]:starts[i + 1]``) and heading (column): how tightly
    the set hugs the nearer of its two edges along it. Overwrites ``coord`` (the caller's
    scratch). Set by set: each set's edges broadcast over its own rows, in the cache, where
    repeating them to every row of the group took as long again as the arithmetic (and the
    sums are each set's own, in the order a set alone would add them)."""
    bounds = starts.tolist()
    out = np.empty((len(bounds) - 1, coord.shape[1]))
    for k, (i, j) in enumerate(itertools.pairwise(bounds)):
        rows = coord[i:j]
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        d = rows - lo
        np.minimum(d, np.subtract(hi, rows, out=rows), out=d)
        np.maximum(d, _CLOSENESS_FLOOR_M, out=d)
        np.divide(1.0, d, out=d)
        out[k] = d.sum(axis=0)
    return out


def _wrap_half(angle: float) -> float:
    """The same undirected heading in (-pi/2, pi/2]."""
    wrapped = (angle + math.pi / 2) % math.pi - math.pi / 2
    return math.pi / 2 if math.isclose(wrapped, -math.pi / 2) else wrapped


class LidarObjects:
    """The lidar-only branch: `encode` (the lidar encoder stage) then `detect` (in fusion).

    Args:
        config: tunables; default :class:`LidarObjectConfig`.
        encoder: the lidar encoder on :data:`engines.lidar.config.OBSTACLE_CONFIG`'s grid
            (default: the packaged ONNX model on ONNX Runtime, CPU).
    """

    def __init__(
        self, config: LidarObjectConfig | None = None, encoder: LidarEncoderRunner | None = None
    ) -> None:
        self.config = config or LidarObjectConfig()
        self.encoder = encoder or LidarEncoderRunner(
            EngineFactory().lidar_encoder(OBSTACLE_CONFIG), OBSTACLE_CONFIG
        )
        grid = self.encoder.config
        if "max_z" not in grid.features:
            raise ValueError(
                f"LidarObjects: the encoder must produce max_z, got {list(grid.features)}"
            )
        self._max_z = grid.features.index("max_z")

    def encode(
        self, points: npt.NDArray[np.float32], ground: GroundPlane
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """The obstacle returns (x, y, height above ground, intensity) and their BEV grid."""
        cfg = self.config
        height = ground.height_above(points[:, :3])
        rows = np.flatnonzero((height >= cfg.min_height_m) & (height < cfg.max_height_m))
        # Whole rows gathered, then the height set: the same floats as stacking the kept
        # columns, at a quarter of the time (boolean indexes of columns are numpy's slow path).
        obstacle = np.take(np.asarray(points, dtype=np.float32)[:, :4], rows, axis=0)
        obstacle[:, 2] = np.take(height, rows)
        limit = self.encoder.config.max_points
        if len(obstacle) > limit:
            obstacle = obstacle[:: -(-len(obstacle) // limit)]
        return obstacle, self.encoder.encode(obstacle)

    def detect(
        self,
        obstacle: npt.NDArray[np.float32],
        bev: npt.NDArray[np.float32],
        ground: GroundPlane,
        fused: Sequence[Detection3D] = (),
    ) -> list[Detection3D]:
        """Detections (`sources=("lidar",)`) of the clusters no fused detection explains."""
        return self.select(self.clusters(obstacle, bev, ground), fused)

    def clusters(
        self,
        obstacle: npt.NDArray[np.float32],
        bev: npt.NDArray[np.float32],
        ground: GroundPlane,
    ) -> LidarClusters:
        """The clusters and their objects, before the fused detections are known (the part of
        `detect` that can run beside the camera branch)."""
        grid = self.encoder.config
        # Cells whose highest return is below an obstacle's top (grass, kerbs) join no cluster.
        occupied = (bev[self._max_z] >= self.config.min_top_m).astype(np.uint8)
        joined = cv2.dilate(occupied, np.ones((3, 3), np.uint8))
        count, labels = cv2.connectedComponents(joined, connectivity=8)
        ix = np.floor((obstacle[:, 0] - grid.x_range[0]) / grid.cell_size).astype(np.int64)
        iy = np.floor((obstacle[:, 1] - grid.y_range[0]) / grid.cell_size).astype(np.int64)
        inside = (ix >= 0) & (ix < grid.width) & (iy >= 0) & (iy < grid.height)
        point_label = np.zeros(len(obstacle), np.int64)
        point_label[inside] = labels[iy[inside], ix[inside]]
        order = np.argsort(point_label, kind="stable")
        bounds = np.searchsorted(point_label[order], np.arange(count + 1))
        # Most components are a few cells of clutter: only those with enough points are looked
        # at (label 0 is the background).
        sizes = np.diff(bounds)
        candidates = np.flatnonzero(sizes[1:] >= self.config.min_points) + 1
        ordered = np.take(obstacle, order, axis=0)
        return self._objects(ordered, bounds[candidates], bounds[candidates + 1], ground)

    def select(
        self, clusters: LidarClusters, fused: Sequence[Detection3D] = ()
    ) -> list[Detection3D]:
        """The objects of `clusters` that no fused detection explains."""
        boxes = _FusedBoxes(fused, self.config.explained_margin_m)
        fraction = self.config.explained_fraction
        if not boxes or not clusters.objects:
            return list(clusters.objects)
        # Footprints out of reach of a cluster's bounding box hold none of its points: most
        # clusters (walls, poles) are far from every fused detection. All pairs at once.
        near = boxes.near(clusters.low, clusters.high) if fraction > 0 else None
        pairs = zip(clusters.members, clusters.objects, strict=True)
        return [
            detection
            for k, (xy, detection) in enumerate(pairs)
            if not boxes.explain(xy, fraction, None if near is None else near[k])
        ]

    def _objects(
        self,
        points: npt.NDArray[np.float32],
        starts: npt.NDArray[np.int64],
        ends: npt.NDArray[np.int64],
        ground: GroundPlane,
    ) -> LidarClusters:
        """The objects of the clusters ``points[starts[i]:ends[i]]`` (x, y, height, intensity),
        all at once; a cluster too large, too low or floating is none."""
        cfg = self.config
        # Extremes of every cluster in float32 (exact), widened where compared: the same values
        # as extremes of the widened points, without widening every point.
        low, high = _segment_extremes(points[:, :3], starts, ends)
        span = high[:, :2].astype(np.float64) - low[:, :2].astype(np.float64)
        top, base = high[:, 2].astype(np.float64), low[:, 2].astype(np.float64)
        plausible = np.flatnonzero(
            (np.hypot(span[:, 0], span[:, 1]) <= cfg.max_extent_m * math.sqrt(2))
            & (top >= cfg.min_top_m)
            & (base <= cfg.max_base_m)
        ).tolist()
        clusters = [points[starts[k] : ends[k]] for k in plausible]
        xys = [c[:, :2].astype(np.float64) for c in clusters]
        # The fit takes at most _FIT_MAX_POINTS of a cluster, stride-sampled.
        fits = fit_rectangles(
            [np.ascontiguousarray(xy[:: -(-len(xy) // _FIT_MAX_POINTS)]) for xy in xys]
        )
        kept = [i for i, fit in enumerate(fits) if fit[1] <= cfg.max_extent_m]
        z = ground.z_at([fits[i][0] for i in kept])
        # The box is what the lidar saw (no class prior to complete it with); never thinner
        # than a cell, so a pole or a flat face still has a footprint.
        cell = self.encoder.config.cell_size
        objects = []
        for i, cz in zip(kept, z.tolist(), strict=True):
            (cx, cy), length, width, yaw = fits[i]
            height = float(top[plausible[i]])
            objects.append(
                Detection3D(
                    label=UNKNOWN_LABEL,
                    score=cfg.max_score * min(1.0, len(clusters[i]) / cfg.full_score_points),
                    center=(cx, cy, cz + height / 2),
                    size=(max(length, cell), max(width, cell), height),
                    yaw=yaw,
                    sources=("lidar",),
                )
            )
        rows = [plausible[i] for i in kept]
        return LidarClusters(
            tuple(xys[i] for i in kept),
            tuple(objects),
            low[rows, :2].astype(np.float64).reshape(-1, 2),
            high[rows, :2].astype(np.float64).reshape(-1, 2),
        )


def _segment_extremes(
    values: npt.NDArray[np.float32], starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Column minima and maxima of the rows ``starts[i]:ends[i]`` of ``values`` (each range
    non-empty, in increasing order), K x columns each."""
    if len(starts) == 0:
        empty = np.zeros((0, values.shape[1]), values.dtype)
        return empty, empty
    # reduceat reduces from each index to the next: interleaving the ends keeps the rows
    # between ranges out (their results, at the odd places, are dropped).
    index = np.empty(2 * len(starts), np.int64)
    index[0::2], index[1::2] = starts, ends
    if index[-1] == len(values):
        index = index[:-1]
    low = np.minimum.reduceat(values, index, axis=0)[0::2]
    high = np.maximum.reduceat(values, index, axis=0)[0::2]
    return low, high


@dataclass(frozen=True, eq=False)
class LidarClusters:
    """One sweep's lidar-only objects before the fused detections are known: per object, its
    cluster's points (x, y; N x 2) and the object; `low` and `high` (M x 2), each cluster's
    bounding box (found with the clusters, beside the camera branch, so that choosing among
    them once the fused detections are known need not)."""

    members: tuple[FloatArray, ...]
    objects: tuple[Detection3D, ...]
    low: FloatArray
    high: FloatArray


class _FusedBoxes:
    """The fused detections' footprints, grown by ``margin_m``, as arrays: a cluster is tested
    against all of them at once."""

    def __init__(self, fused: Sequence[Detection3D], margin_m: float) -> None:
        # Scalars as the per-detection loop computed them (math.cos, Python float sums), so
        # the tests below compare the very same numbers.
        self.count = len(fused)
        self.cx = np.array([d.center[0] for d in fused], np.float64)[:, None]
        self.cy = np.array([d.center[1] for d in fused], np.float64)[:, None]
        self.cos = np.array([math.cos(d.yaw) for d in fused], np.float64)[:, None]
        self.sin = np.array([math.sin(d.yaw) for d in fused], np.float64)[:, None]
        self.neg_sin = np.array([-math.sin(d.yaw) for d in fused], np.float64)[:, None]
        self.half_length = np.array([d.size[0] / 2 + margin_m for d in fused])[:, None]
        self.half_width = np.array([d.size[1] / 2 + margin_m for d in fused])[:, None]
        # A footprint lies within this distance of its centre (with a margin for rounding).
        self.reach = (np.hypot(self.half_length, self.half_width) * 1.001 + 1e-6)[:, 0]

    def __bool__(self) -> bool:
        return self.count > 0

    def near(self, low: FloatArray, high: FloatArray) -> BoolArray:
        """M x D: whether footprint d reaches the bounding box (`low`, `high`; M x 2) of m."""
        cx, cy = self.cx[:, 0], self.cy[:, 0]
        gap_x = np.maximum(np.maximum(low[:, :1] - cx, cx - high[:, :1]), 0.0)
        gap_y = np.maximum(np.maximum(low[:, 1:] - cy, cy - high[:, 1:]), 0.0)
        reached: BoolArray = np.hypot(gap_x, gap_y) <= self.reach
        return reached

    def explain(self, xy: FloatArray, fraction: float, near: BoolArray | None = None) -> bool:
        """Whether at least ``fraction`` of the points lie in one footprint. `near`: the
        footprints that can hold any of them (`near`'s row for the points' bounding box); with
        a positive fraction, computed here when not given."""
        cx, cy, cos, sin, neg_sin = self.cx, self.cy, self.cos, self.sin, self.neg_sin
        half_length, half_width = self.half_length, self.half_width
        if fraction > 0:
            if near is None:
                near = self.near(xy.min(axis=0)[None], xy.max(axis=0)[None])[0]
            if not near.any():
                return False
            cx, cy, cos, sin, neg_sin = cx[near], cy[near], cos[near], sin[near], neg_sin[near]
            half_length, half_width = half_length[near], half_width[near]
        dx = xy[:, 0] - cx  # D x N
        dy = xy[:, 1] - cy
        inside = (np.abs(cos * dx + sin * dy) <= half_length) & (
            np.abs(neg_sin * dx + cos * dy) <= half_width
        )
        return bool((inside.mean(axis=1) >= fraction).any())
