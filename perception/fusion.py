"""Late "frustum" fusion: 2D camera boxes + lidar points -> 3D boxes in the vehicle frame (numpy).

This is the walking skeleton's fusion stage; a compiled torch/ONNX engine replaces it later. The
design follows what a prototype learned on the KITTI frames (``shared/notes/fusion-findings.md``):

1. The lidar points are projected into the image once per camera (shared by all boxes).
2. The points inside each (slightly shrunk) 2D box, above the *local* ground (the plane
   corrected by the lowest returns nearby, since one plane drifts on slopes), are clustered in
   bird's-eye view (BEV) with a linking distance that grows with range. The object is the
   *nearest* cluster that covers at least ~30% of the box width, reaches the class's minimum
   height above the ground, is no longer than the class allows and lies at a depth consistent
   with the box height: the lidar sees through windows and over roofs, so the largest cluster or
   the mean of the box is often background, and low or long clusters are guardrails or walls.
3. The heading is searched over [0, 90) degrees, minimising a trimmed distance of the
   sensor-facing outline points (nearest return per azimuth bin) to the nearest edge of the
   cluster's percentile-trimmed rectangle. When the outline spans less than the class's
   ``yaw_fit_min_extent_m`` end to end (e.g. only a car's back is seen) the heading is ambiguous
   and comes from the prior (``FusionConfig.prior_yaw_rad``: the vehicle x axis, i.e. the lane).
4. The centre is pushed back from the visible faces by the class size prior (the centroid of the
   visible points is ~1.2 m short of a car's centre). An end that is cut off by the image edge
   or hidden behind something nearer beside the object in azimuth is not used as an anchor.

Frames and units: points and boxes are in the vehicle frame (x forward, y left, z up; for KITTI
the Velodyne frame), metres and radians; 2D boxes are original-image pixels. The lidar is taken to
sit at ``FusionConfig.lidar_origin_xy`` (the vehicle origin by default, true for KITTI) when
reasoning about which faces of an object it can see.

Everything is deterministic: RANSAC draws from a generator seeded by ``FusionConfig.seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from calibration.transforms import RigidTransform
from perception.messages import CameraBox, Detection3D

__all__ = [
    "Box2DLike",
    "BoxLike",
    "ClassPrior",
    "FusionConfig",
    "GroundPlane",
    "bev_corners",
    "bev_iou",
    "estimate_ground",
    "fuse_camera_boxes",
    "local_ground_heights",
    "suppress_duplicates",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# Ends of a box axis, as indices into (lo, hi).
_LO, _HI = 0, 1
# Points above the class's largest height by more than this are overhangs (trees, signs); the
# margin absorbs local-ground error.
_OVERHANG_MARGIN_M = 0.3
# Length of outline behind a cut end that gives the direction the object continues in.
_CUT_TAIL_M = 0.8
# The heading search fits the rectangle to at most this many cluster points (stride sampled).
_MAX_RECT_POINTS = 600


class Box2DLike(Protocol):
    """A 2D detection: label, score in [0, 1], corners in original-image pixels (x2, y2 exclusive).

    ``engines.camera_encoder.Box2D`` satisfies it.
    """

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def x1(self) -> float: ...

    @property
    def y1(self) -> float: ...

    @property
    def x2(self) -> float: ...

    @property
    def y2(self) -> float: ...


@dataclass(frozen=True)
class ClassPrior:
    """Size prior and plausibility limits of one label (metres).

    ``length_m``, ``width_m``, ``height_m``: the typical box (used where the far side is unseen).
    ``max_*_m``: the largest observed extents still believed to be one object; observed extents
    between the prior and these replace the prior.
    ``min_height_above_ground_m``: the cluster's top must reach this above the local ground
    (rejects guardrails, kerbs and low walls for cars).
    ``yaw_fit_min_extent_m``: below this visible extent the heading is ambiguous and comes from
    the prior (``inf`` never fits a heading, e.g. for pedestrians).
    ``min_points``: clusters with fewer lidar points yield no detection.
    ``min_box_height_ratio``, ``max_box_height_ratio``: bounds on the prior height's image height
    at the cluster's depth over the 2D box height (a loose depth check; 0 and ``inf`` disable it).
    Above 1 the box is shorter than expected (occluded from below); far below 1 the cluster is
    too far away for that box.
    """

    label: str
    length_m: float
    width_m: float
    height_m: float
    max_length_m: float
    max_width_m: float
    max_height_m: float
    min_height_above_ground_m: float
    yaw_fit_min_extent_m: float
    min_points: int = 5
    min_box_height_ratio: float = 0.6
    max_box_height_ratio: float = 2.5

    def __post_init__(self) -> None:
        for name in ("length_m", "width_m", "height_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ClassPrior({self.label}).{name}: must be > 0, got {value}")
            limit = getattr(self, f"max_{name}")
            if not limit >= value:
                raise ValueError(
                    f"ClassPrior({self.label}).max_{name}: must be >= {name} ({value}), got {limit}"
                )
        if self.min_points < 1:
            raise ValueError(f"ClassPrior({self.label}).min_points: must be >= 1")
        if not 0.0 <= self.min_box_height_ratio <= self.max_box_height_ratio:
            raise ValueError(
                f"ClassPrior({self.label}): need 0 <= min_box_height_ratio <= max_box_height_ratio"
            )


# The three KITTI classes use the PointPillars / KITTI anchor sizes (data README §1); the COCO
# road users the camera encoder also reports get typical sizes with looser checks.
DEFAULT_CLASS_PRIORS: tuple[ClassPrior, ...] = (
    ClassPrior("Car", 3.9, 1.6, 1.56, 6.5, 2.6, 2.8, 0.85, 2.4),
    ClassPrior("Pedestrian", 0.8, 0.6, 1.73, 1.5, 1.5, 2.3, 0.8, math.inf),
    ClassPrior("Cyclist", 1.76, 0.6, 1.73, 2.5, 1.5, 2.3, 0.8, 1.2),
    ClassPrior("motorbike", 2.0, 0.8, 1.5, 2.8, 1.5, 2.3, 0.7, 1.4),
    ClassPrior("truck", 6.0, 2.4, 2.8, 18.0, 3.0, 4.5, 1.0, 3.0, 5, 0.3, 2.5),
    ClassPrior("bus", 11.0, 2.6, 3.2, 19.0, 3.0, 4.5, 1.2, 3.0, 5, 0.3, 2.5),
)
# Anything else: no depth check (sizes vary too much for the box height to say much).
GENERIC_PRIOR = ClassPrior("*", 1.0, 1.0, 1.5, 20.0, 5.0, 5.0, 0.3, 1.5, 5, 0.0, math.inf)


@dataclass(frozen=True)
class FusionConfig:
    """Tunables of ground estimation and camera-lidar fusion (metres, degrees where named).

    Ground (``estimate_ground``): RANSAC over the points within ``ground_fit_range_m`` (BEV) whose
    z lies within [``ground_prior_z_m`` - ``ground_band_below_m``, ``ground_prior_z_m`` +
    ``ground_band_above_m``]; ``ground_prior_z_m`` is the ground's z in the vehicle frame
    (-1.73 m: the KITTI Velodyne mounting height) and is the fallback plane when too few points
    are found. The local ground corrects the plane per ``local_ground_cell_m`` BEV cell by the
    lowest point within ``local_ground_window`` cells, clamped to +-``local_ground_max_offset_m``.

    Fusion (``fuse_camera_boxes``): ``labels`` restricts which 2D labels are fused (empty: all;
    labels without a ``class_priors`` entry use ``generic_prior``). See the module docstring for
    the method.
    """

    # Points.
    max_range_m: float = 80.0  # BEV range from the lidar beyond which points are ignored
    min_depth_m: float = 0.5  # camera depth below which points are ignored
    lidar_origin_xy: tuple[float, ...] = (0.0, 0.0)  # lidar position in the vehicle frame
    # Ground.
    ground_prior_z_m: float = -1.73
    ground_band_below_m: float = 1.0
    ground_band_above_m: float = 0.6
    ground_fit_range_m: float = 40.0
    ransac_iterations: int = 64
    ransac_threshold_m: float = 0.12
    ransac_max_tilt_deg: float = 12.0
    ransac_max_points: int = 3000  # candidates are stride-sampled down to this many
    ransac_min_inliers: int = 50
    seed: int = 0  # seeds the RANSAC generator
    local_ground_cell_m: float = 1.0
    local_ground_window: int = 5
    local_ground_max_offset_m: float = 0.6
    ground_clearance_m: float = 0.25  # points lower than this above the local ground are ground
    # Point selection.
    labels: tuple[str, ...] = ()
    box_shrink: float = 0.05  # fraction of the box width/height removed from each side
    cluster_cell_m: float = 0.3  # BEV linking cell at the sensor ...
    cluster_cell_per_m: float = 0.01  # ... growing by this much per metre of range
    min_width_coverage: float = 0.3  # fraction of the box width the object's points must span
    coverage_bins: int = 16  # columns the box width is divided into to measure that
    # Heading.
    yaw_search_step_deg: float = 1.0
    yaw_refine_step_deg: float = 0.2
    yaw_trim_fraction: float = 0.8
    rect_trim_percent: float = 5.0
    outline_bin_m: float = 0.15  # azimuth bin (as arc length) of the sensor-facing outline
    min_outline_points: int = 6  # fewer outline points: heading from the prior
    prior_yaw_rad: float = 0.0
    # Centre.
    full_extent_fraction: float = 0.85  # an axis seen over this much of the prior is seen whole
    image_edge_margin_px: float = 2.0  # a box this close to the image edge is cut off by it
    occlusion_margin_deg: float = 1.5  # azimuth beside an end searched for nearer occluders
    occlusion_gap_m: float = 0.5  # how much nearer an occluder must be
    # Score: camera score x (1 - weight x (1 - min(1, coverage / full_support_coverage))).
    lidar_support_weight: float = 0.2
    full_support_coverage: float = 0.6
    class_priors: tuple[ClassPrior, ...] = DEFAULT_CLASS_PRIORS
    generic_prior: ClassPrior = GENERIC_PRIOR

    def __post_init__(self) -> None:
        positive = (
            "max_range_m",
            "min_depth_m",
            "ground_fit_range_m",
            "ransac_threshold_m",
            "local_ground_cell_m",
            "cluster_cell_m",
            "yaw_search_step_deg",
            "yaw_refine_step_deg",
            "outline_bin_m",
            "full_extent_fraction",
            "full_support_coverage",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"FusionConfig.{name}: must be a finite number > 0, got {value}")
        for name in ("ransac_iterations", "ransac_max_points", "coverage_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"FusionConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.ransac_max_points < 3:
            raise ValueError("FusionConfig.ransac_max_points: must be >= 3")
        if self.local_ground_window < 1 or self.local_ground_window % 2 == 0:
            raise ValueError("FusionConfig.local_ground_window: must be an odd number >= 1")
        if not 0.0 <= self.box_shrink < 0.5:
            raise ValueError(f"FusionConfig.box_shrink: must be in [0, 0.5), got {self.box_shrink}")
        for name in ("min_width_coverage", "yaw_trim_fraction", "lidar_support_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"FusionConfig.{name}: must be in [0, 1], got {value}")
        if not 0.0 <= self.rect_trim_percent < 50.0:
            raise ValueError("FusionConfig.rect_trim_percent: must be in [0, 50)")
        if len(self.lidar_origin_xy) != 2:
            raise ValueError("FusionConfig.lidar_origin_xy: expected 2 values (x, y)")
        if not 0.0 < self.ransac_max_tilt_deg < 90.0:
            raise ValueError("FusionConfig.ransac_max_tilt_deg: must be in (0, 90)")

    def prior_for(self, label: str) -> ClassPrior:
        """The size prior of ``label`` (``generic_prior`` for labels without their own)."""
        for prior in self.class_priors:
            if prior.label == label:
                return prior
        return self.generic_prior


# --------------------------------------------------------------------------------------------
# Ground


@dataclass(frozen=True)
class GroundPlane:
    """The plane ``n · p + d = 0`` in the vehicle frame; ``normal`` is a unit vector pointing up.

    Raises ValueError when the normal is not finite, zero or points down.
    """

    normal: tuple[float, float, float]
    offset: float

    def __post_init__(self) -> None:
        n = np.asarray(self.normal, dtype=np.float64)
        if n.shape != (3,) or not np.all(np.isfinite(n)) or not math.isfinite(self.offset):
            raise ValueError(f"GroundPlane: normal and offset must be finite, got {self.normal}")
        norm = float(np.linalg.norm(n))
        if norm < 1e-9 or n[2] <= 0:
            raise ValueError(f"GroundPlane.normal: must be non-zero with z > 0, got {self.normal}")
        if abs(norm - 1.0) > 1e-6:
            object.__setattr__(self, "normal", tuple(float(v) for v in n / norm))
            object.__setattr__(self, "offset", float(self.offset) / norm)

    @staticmethod
    def horizontal(z: float) -> GroundPlane:
        """The level plane at height ``z`` (vehicle frame)."""
        return GroundPlane((0.0, 0.0, 1.0), -float(z))

    def height_above(self, points: npt.ArrayLike) -> FloatArray:
        """Signed distance (m) of N x >=3 points above the plane (negative below)."""
        p = _as_points(points, "points")
        out: FloatArray = p[:, :3] @ np.asarray(self.normal) + self.offset
        return out

    def z_at(self, xy: npt.ArrayLike) -> FloatArray:
        """The plane's z at N x 2 BEV positions."""
        q = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        nx, ny, nz = self.normal
        out: FloatArray = -(self.offset + q[:, 0] * nx + q[:, 1] * ny) / nz
        return out


def _as_points(points: npt.ArrayLike, name: str) -> FloatArray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"{name}: expected an N x 3 or N x 4 array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {p.dtype}")
    return np.asarray(p, dtype=np.float64)


def estimate_ground(points_vehicle: npt.ArrayLike, config: FusionConfig) -> GroundPlane:
    """Fit the ground plane to the low points of a sweep (vehicle frame, N x 4 or N x 3).

    Deterministic RANSAC (generator seeded by ``config.seed``) over the points near the expected
    ground height, refined by least squares on the inliers. Falls back to the level plane at
    ``config.ground_prior_z_m`` when fewer than ``config.ransac_min_inliers`` points support any
    plane. Non-finite points are ignored. Raises ValueError when ``points_vehicle`` is not N x 3+.
    """
    p = _as_points(points_vehicle, "points_vehicle")
    fallback = GroundPlane.horizontal(config.ground_prior_z_m)
    z0 = config.ground_prior_z_m
    with np.errstate(invalid="ignore"):
        # Non-finite points fail these comparisons and drop out.
        keep = (
            (p[:, 0] ** 2 + p[:, 1] ** 2 <= config.ground_fit_range_m**2)
            & (p[:, 2] >= z0 - config.ground_band_below_m)
            & (p[:, 2] <= z0 + config.ground_band_above_m)
        )
    cand = p[keep, :3]
    if len(cand) < max(config.ransac_min_inliers, 3):
        return fallback
    if len(cand) > config.ransac_max_points:
        # An even stride over the scan order samples every ring; cheaper than a random choice.
        cand = cand[:: math.ceil(len(cand) / config.ransac_max_points)]
    rng = np.random.default_rng(config.seed)
    # All hypotheses are scored at once: iterations x M distances is small (64 x 3000).
    tri = cand[rng.integers(0, len(cand), size=(config.ransac_iterations, 3))]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-9
    normals[ok] /= norms[ok, None]
    normals *= np.where(normals[:, 2:3] < 0, -1.0, 1.0)
    ok &= normals[:, 2] >= math.cos(math.radians(config.ransac_max_tilt_deg))
    if not np.any(ok):
        return fallback
    offsets = -np.einsum("ij,ij->i", normals, tri[:, 0])
    dist = np.abs(cand @ normals[ok].T + offsets[ok])
    counts = np.count_nonzero(dist < config.ransac_threshold_m, axis=0)
    best = int(np.argmax(counts))
    if counts[best] < config.ransac_min_inliers:
        return fallback
    normal, offset = normals[ok][best], float(offsets[ok][best])
    # Two least-squares refinements on the inliers (SVD: the normal is the least-spread axis).
    for _ in range(2):
        inliers = cand[np.abs(cand @ normal + offset) < config.ransac_threshold_m]
        if len(inliers) < max(config.ransac_min_inliers, 3):
            break
        centroid = inliers.mean(axis=0)
        _, _, vt = np.linalg.svd(inliers - centroid, full_matrices=False)
        refined = vt[2] if vt[2, 2] > 0 else -vt[2]
        if refined[2] < math.cos(math.radians(config.ransac_max_tilt_deg)):
            break
        normal, offset = refined, -float(refined @ centroid)
    return GroundPlane((float(normal[0]), float(normal[1]), float(normal[2])), offset)


@dataclass(frozen=True, eq=False)
class _LocalGround:
    """Per-cell correction of the plane: the lowest nearby return (m, along the plane normal)."""

    plane: GroundPlane
    offsets: npt.NDArray[np.float32]  # (n, n) grid, row = x cell, column = y cell
    origin: float  # grid covers [-origin, origin) in x and y
    cell: float


def _build_local_ground(
    points: FloatArray, heights: FloatArray, plane: GroundPlane, config: FusionConfig
) -> _LocalGround:
    cell = config.local_ground_cell_m
    origin = config.max_range_m
    n = math.ceil(2 * origin / cell)
    ij = np.floor((points[:, :2] + origin) / cell).astype(np.int64)
    inside = np.all((ij >= 0) & (ij < n), axis=1)
    # Only returns near the plane can be ground; anything far above or below is an object or noise.
    lim = config.local_ground_max_offset_m
    inside &= (heights >= -lim) & (heights <= lim)
    grid = np.full(n * n, np.inf, dtype=np.float32)
    np.minimum.at(grid, ij[inside, 0] * n + ij[inside, 1], heights[inside].astype(np.float32))
    k = config.local_ground_window
    lowest = cv2.erode(grid.reshape(n, n), np.ones((k, k), np.uint8), borderValue=np.inf)
    offsets = np.where(np.isfinite(lowest), lowest, 0.0).astype(np.float32)
    return _LocalGround(plane, offsets, origin, cell)


def _local_offset(ground: _LocalGround, xy: FloatArray) -> FloatArray:
    n = ground.offsets.shape[0]
    ij = np.floor((xy + ground.origin) / ground.cell).astype(np.int64)
    ij = np.clip(ij, 0, n - 1)
    out: FloatArray = ground.offsets[ij[:, 0], ij[:, 1]].astype(np.float64)
    return out


def local_ground_heights(
    points_vehicle: npt.ArrayLike, ground: GroundPlane, config: FusionConfig
) -> FloatArray:
    """Heights (m) of the points above the *local* ground: the plane corrected per BEV cell.

    A single plane drifts on slopes and crests; the correction is the lowest return (relative to
    the plane) within ``config.local_ground_window`` cells of ``config.local_ground_cell_m``,
    limited to +-``config.local_ground_max_offset_m``. Raises ValueError on a bad point array.
    """
    p = _as_points(points_vehicle, "points_vehicle")
    h = ground.height_above(p)
    local = _build_local_ground(p, h, ground, config)
    out: FloatArray = h - _local_offset(local, p[:, :2])
    return out


# --------------------------------------------------------------------------------------------
# Fusion


@dataclass(frozen=True, eq=False)
class _Scene:
    """The points of one sweep as seen by one camera, computed once and shared by all boxes."""

    xy: FloatArray  # M x 2 BEV position (vehicle frame), points in the image only
    uv: FloatArray  # M x 2 pixels
    depth: FloatArray  # M camera depth (m)
    height: FloatArray  # M height above the local ground (m)
    rng: FloatArray  # M BEV range from the lidar (m)
    azimuth: FloatArray  # M BEV azimuth from the lidar (rad, counter-clockwise from +x)
    obstacle: BoolArray  # M above the ground clearance
    ground: _LocalGround
    origin: FloatArray  # lidar position (x, y)
    camera: CameraModel


def _build_scene(
    points: FloatArray,
    camera_from_vehicle: RigidTransform,
    camera: CameraModel,
    ground: GroundPlane,
    config: FusionConfig,
) -> _Scene:
    origin = np.asarray(config.lidar_origin_xy, dtype=np.float64)
    # A contiguous rotation keeps the big matmul on the BLAS path (a strided view of the 4 x 4
    # matrix is ~10x slower on 100k points).
    rot_t = np.ascontiguousarray(camera_from_vehicle.rotation.T)
    shift = camera_from_vehicle.translation
    with np.errstate(invalid="ignore"):
        # Only points in front of the camera and in range matter, also for the local ground
        # (the part just outside the image edges is kept). Non-finite points drop out here.
        depth_all = points[:, :3] @ rot_t[:, 2] + shift[2]
        rel = points[:, :2] - origin
        keep = (depth_all >= config.min_depth_m) & (
            np.einsum("ij,ij->i", rel, rel) <= config.max_range_m**2
        )
    p = np.ascontiguousarray(points[keep, :3])
    rel = rel[keep]
    plane_h = p @ np.asarray(ground.normal) + ground.offset
    local = _build_local_ground(p, plane_h, ground, config)
    uv, depth = camera.project(p @ rot_t + shift)
    idx = np.flatnonzero(camera.in_image(uv))
    uv, depth = uv[idx], depth[idx]
    height = plane_h[idx] - _local_offset(local, p[idx, :2])
    rel = rel[idx]
    return _Scene(
        xy=p[idx, :2],
        uv=uv,
        depth=depth,
        height=height,
        rng=np.hypot(rel[:, 0], rel[:, 1]),
        azimuth=np.arctan2(rel[:, 1], rel[:, 0]),
        obstacle=height > config.ground_clearance_m,
        ground=local,
        origin=origin,
        camera=camera,
    )


def _check_box(box: Box2DLike, index: int) -> tuple[float, float, float, float, float]:
    try:
        values = (float(box.x1), float(box.y1), float(box.x2), float(box.y2), float(box.score))
        label = box.label
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"boxes[{index}]: not a 2D box (label, score, x1, y1, x2, y2): {e}") from e
    if not isinstance(label, str):
        raise ValueError(f"boxes[{index}].label: expected a string, got {type(label).__name__}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"boxes[{index}]: non-finite coordinates or score {values}")
    return values


def fuse_camera_boxes(  # noqa: PLR0917 - the pipeline's positional call signature
    boxes: Sequence[Box2DLike],
    camera_name: str,
    points_vehicle: npt.ArrayLike,
    camera_from_vehicle: RigidTransform,
    camera: CameraModel,
    ground: GroundPlane,
    config: FusionConfig,
) -> list[Detection3D]:
    """3D boxes (vehicle frame) for the 2D boxes of one camera, from the lidar points inside them.

    ``points_vehicle`` is N x 4 (or N x 3) in the vehicle frame; ``camera_from_vehicle`` maps it to
    the camera frame (z forward) of ``camera``; ``ground`` comes from ``estimate_ground``.

    Each detection has the 2D label and the camera score, scaled down by up to
    ``config.lidar_support_weight`` when the lidar cluster covers little of the box; centre (box
    centre, z at half height above the local ground), size (length, width, height: the class
    prior, or the observed extents where larger and plausible), yaw in (-pi/2, pi/2] (the front
    of an object cannot be told from its back), sources ("camera", "lidar") and its camera box.

    A 2D box yields **no detection** when: its label is not in ``config.labels`` (if set); it is
    empty; no cluster inside it has the class's ``min_points``, covers ``min_width_coverage`` of
    the box width, reaches ``min_height_above_ground_m`` and has a depth consistent with the box
    height. Detections keep the order of ``boxes``.

    Raises ValueError (naming the argument) when ``points_vehicle`` is not an N x 3+ numeric array
    or a box has non-finite coordinates or score.
    """
    p = _as_points(points_vehicle, "points_vehicle")
    checked = [_check_box(box, i) for i, box in enumerate(boxes)]
    if not isinstance(camera_from_vehicle, RigidTransform):
        raise ValueError("camera_from_vehicle: expected a calibration.RigidTransform")
    if not isinstance(camera, CameraModel):
        raise ValueError("camera: expected a calibration camera model (e.g. PinholeCamera)")
    if not boxes:
        return []
    scene = _build_scene(p, camera_from_vehicle, camera, ground, config)
    out: list[Detection3D] = []
    for box, (x1, y1, x2, y2, score) in zip(boxes, checked, strict=True):
        if config.labels and box.label not in config.labels:
            continue
        det = _fuse_one(
            scene,
            box.label,
            score=score,
            box=(x1, y1, x2, y2),
            camera_name=camera_name,
            config=config,
        )
        if det is not None:
            out.append(det)
    return out


@dataclass(frozen=True, eq=False)
class _Cluster:
    index: IntArray  # indices into the scene arrays
    coverage: float  # fraction of the box width it covers


def _clusters(scene: _Scene, idx: IntArray, cell: float) -> list[IntArray]:
    """BEV connected components (8-connected occupancy cells) of the points ``idx``."""
    xy = scene.xy[idx]
    ij = np.floor((xy - xy.min(axis=0)) / cell).astype(np.int64)
    shape = ij.max(axis=0) + 1
    grid = np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    grid[ij[:, 0], ij[:, 1]] = 1
    count, labels = cv2.connectedComponents(grid, connectivity=8)
    point_label = labels[ij[:, 0], ij[:, 1]]
    order = np.argsort(point_label, kind="stable")
    bounds = np.searchsorted(point_label[order], np.arange(1, count + 1))
    return [idx[order[bounds[k] : bounds[k + 1]]] for k in range(count - 1)]


def _select_cluster(
    scene: _Scene,
    idx: IntArray,
    *,
    box: tuple[float, float, float, float],
    inner: tuple[float, float, float, float],
    prior: ClassPrior,
    config: FusionConfig,
) -> _Cluster | None:
    _, y1, _, y2 = box
    ix1, _, ix2, _ = inner
    cam = scene.camera
    top_cut = y1 <= config.image_edge_margin_px
    bottom_cut = y2 >= cam.height - config.image_edge_margin_px
    # Rings and returns thin out with range, so the linking distance grows with it.
    cell = config.cluster_cell_m + config.cluster_cell_per_m * float(np.median(scene.rng[idx]))
    clusters = [c for c in _clusters(scene, idx, cell) if len(c) >= prior.min_points]
    # Nearest first: the first cluster that passes the checks is the object.
    near = [float(np.min(scene.rng[c])) for c in clusters]
    for k in sorted(range(len(clusters)), key=lambda i: (near[i], i)):
        members = clusters[k]
        if float(scene.height[members].max()) < prior.min_height_above_ground_m:
            continue  # guardrail, kerb, low wall: not this object (it may stand behind it)
        bins = np.floor((scene.uv[members, 0] - ix1) / (ix2 - ix1) * config.coverage_bins)
        covered = np.unique(np.clip(bins, 0, config.coverage_bins - 1)).size
        coverage = covered / config.coverage_bins
        if coverage < config.min_width_coverage:
            continue  # a pole or an edge in front of the object, or a sliver of background
        if _major_extent(scene.xy[members]) > prior.max_length_m:
            continue  # longer than any such object: a guardrail, wall or hedge seen lengthwise
        if not (top_cut or bottom_cut) and prior.max_box_height_ratio > 0:
            depth = float(np.median(scene.depth[members]))
            ratio = cam.fy * prior.height_m / depth / max(y2 - y1, 1.0)
            if not prior.min_box_height_ratio <= ratio <= prior.max_box_height_ratio:
                continue
        return _Cluster(members, coverage)
    return None


def _major_extent(xy: FloatArray) -> float:
    """Percentile-trimmed (2-98) extent of BEV points along their principal axis (m)."""
    centred = xy - xy.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    along = centred @ vecs[:, -1]
    lo, hi = np.percentile(along, [2, 98])
    return float(hi - lo)


def _outline(scene: _Scene, members: IntArray, bin_m: float) -> IntArray:
    """The sensor-facing outline: the nearest point per azimuth bin, sorted by azimuth."""
    az = scene.azimuth[members]
    rng = scene.rng[members]
    step = bin_m / max(float(np.median(rng)), 1.0)
    # Azimuths are continuous inside one camera's view (no wrap at +-pi for a forward camera);
    # unwrap around the cluster's mean direction to be safe for any camera.
    mean = math.atan2(float(np.sin(az).mean()), float(np.cos(az).mean()))
    rel = np.angle(np.exp(1j * (az - mean)))
    bins = np.floor(rel / step).astype(np.int64)
    order = np.lexsort((rng, bins))
    first = np.unique(bins[order], return_index=True)[1]
    out: IntArray = members[order[first]]
    return out


def _fit_heading(outline_xy: FloatArray, cluster_xy: FloatArray, config: FusionConfig) -> float:
    """Heading in [0, pi/2) of the rectangle that best explains the object's points.

    For each candidate heading the rectangle is the percentile-trimmed extent of the whole cluster
    (roof and interior returns included); the cost is the trimmed mean distance of the
    sensor-facing outline points to the nearest rectangle edge, which is small only when the
    visible faces lie along the edges.
    """
    mean = cluster_xy.mean(axis=0)
    out_xy = outline_xy - mean
    all_xy = cluster_xy[:: math.ceil(len(cluster_xy) / _MAX_RECT_POINTS)] - mean
    q = config.rect_trim_percent

    def costs(thetas: FloatArray) -> FloatArray:
        c, s = np.cos(thetas)[:, None], np.sin(thetas)[:, None]
        a_all = all_xy[:, 0] * c + all_xy[:, 1] * s
        b_all = -all_xy[:, 0] * s + all_xy[:, 1] * c
        a_lo, a_hi = np.percentile(a_all, [q, 100 - q], axis=1)
        b_lo, b_hi = np.percentile(b_all, [q, 100 - q], axis=1)
        a = out_xy[:, 0] * c + out_xy[:, 1] * s
        b = -out_xy[:, 0] * s + out_xy[:, 1] * c
        d = np.minimum(
            np.minimum(np.abs(a - a_lo[:, None]), np.abs(a - a_hi[:, None])),
            np.minimum(np.abs(b - b_lo[:, None]), np.abs(b - b_hi[:, None])),
        )
        keep = max(1, round(d.shape[1] * config.yaw_trim_fraction))
        out: FloatArray = np.partition(d, keep - 1, axis=1)[:, :keep].mean(axis=1)
        return out

    step = math.radians(config.yaw_search_step_deg)
    coarse = np.arange(0.0, math.pi / 2, step)
    best = float(coarse[int(np.argmin(costs(coarse)))])
    fine_step = math.radians(min(config.yaw_refine_step_deg, config.yaw_search_step_deg))
    fine = best + np.arange(-step, step + fine_step / 2, fine_step)
    best = float(fine[int(np.argmin(costs(fine)))])
    return best % (math.pi / 2)


def _wrap_half(angle: float) -> float:
    """Angle modulo pi, in (-pi/2, pi/2]."""
    a = (angle + math.pi / 2) % math.pi - math.pi / 2
    return a if a > -math.pi / 2 else a + math.pi


def _cut_ends(
    scene: _Scene,
    members: IntArray,
    *,
    outline: IntArray,
    axes: FloatArray,
    box: tuple[float, float, float, float],
    config: FusionConfig,
) -> set[tuple[int, int]]:
    """(axis, end) pairs of the object box that are cut off by the image edge or hidden.

    The continuation direction at a cut side is the direction the sensor-facing outline travels
    as it reaches that side: the object goes on that way, so the end of that axis is unknown.
    """
    x1, _, x2, _ = box
    cam = scene.camera
    az = scene.azimuth[outline]
    sides: set[int] = set()  # +1: the max-azimuth side of the outline, -1: the min side
    u = scene.uv[members, 0]
    mem_az = scene.azimuth[members]
    mid_az = 0.5 * (float(az.min()) + float(az.max()))
    if x1 <= config.image_edge_margin_px:
        sides.add(1 if mem_az[int(np.argmin(u))] >= mid_az else -1)
    if x2 >= cam.width - config.image_edge_margin_px:
        sides.add(1 if mem_az[int(np.argmax(u))] >= mid_az else -1)
    # Occlusion: something nearer just beyond either azimuth end blocks the object's continuation.
    margin = math.radians(config.occlusion_margin_deg)
    obstacles = np.flatnonzero(scene.obstacle)
    for side, end_az, end_rng in (
        (1, float(az.max()), float(scene.rng[outline[int(np.argmax(az))]])),
        (-1, float(az.min()), float(scene.rng[outline[int(np.argmin(az))]])),
    ):
        if side in sides:
            continue
        delta = (scene.azimuth[obstacles] - end_az) * side
        near = (delta > 0) & (delta <= margin)
        near &= scene.rng[obstacles] < end_rng - config.occlusion_gap_m
        if np.any(near):
            sides.add(side)
    cuts: set[tuple[int, int]] = set()
    if not sides:
        return cuts
    order = np.argsort(az, kind="stable")
    pts = scene.xy[outline[order]]
    for side in sides:
        end = pts[-1] if side > 0 else pts[0]
        dist = np.hypot(*(pts - end).T)
        tail = pts[(dist > 1e-6) & (dist <= _CUT_TAIL_M)]
        if len(tail):
            direction = end - tail.mean(axis=0)
        else:
            # One point only: the object continues across the line of sight.
            ray = end - scene.origin
            direction = np.array([-ray[1], ray[0]]) * side
        proj = axes @ direction
        axis = int(np.argmax(np.abs(proj)))
        cuts.add((axis, _HI if proj[axis] > 0 else _LO))
    return cuts


def _fuse_one(
    scene: _Scene,
    label: str,
    *,
    score: float,
    box: tuple[float, float, float, float],
    camera_name: str,
    config: FusionConfig,
) -> Detection3D | None:
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return None
    prior = config.prior_for(label)
    sx, sy = (x2 - x1) * config.box_shrink, (y2 - y1) * config.box_shrink
    inner = (x1 + sx, y1 + sy, x2 - sx, y2 - sy)
    u, v = scene.uv[:, 0], scene.uv[:, 1]
    inside = (u >= inner[0]) & (u < inner[2]) & (v >= inner[1]) & (v < inner[3])
    inside &= scene.obstacle
    inside &= scene.height <= prior.max_height_m + _OVERHANG_MARGIN_M
    idx = np.flatnonzero(inside)
    if len(idx) < prior.min_points:
        return None
    cluster = _select_cluster(scene, idx, box=box, inner=inner, prior=prior, config=config)
    if cluster is None:
        return None
    members = cluster.index
    xy = scene.xy[members]
    outline = _outline(scene, members, config.outline_bin_m)

    # Heading: fitted when enough of the outline is visible (end to end), else the prior. The
    # whole cluster would overstate it: roof and rear-window rings spread behind a car's back.
    yaw = config.prior_yaw_rad
    if len(outline) >= config.min_outline_points:
        ends = scene.xy[
            outline[
                [int(np.argmin(scene.azimuth[outline])), int(np.argmax(scene.azimuth[outline]))]
            ]
        ]
        visible = float(np.hypot(*(ends[1] - ends[0])))
        if visible >= prior.yaw_fit_min_extent_m:
            theta = _fit_heading(scene.xy[outline], xy, config)
            axes = np.array(
                [[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]
            )
            proj = (xy - xy.mean(axis=0)) @ axes.T
            extents = np.percentile(proj, 98, axis=0) - np.percentile(proj, 2, axis=0)
            yaw = theta + (math.pi / 2 if extents[1] > extents[0] else 0.0)
    yaw = _wrap_half(yaw)
    axes = np.array([[math.cos(yaw), math.sin(yaw)], [-math.sin(yaw), math.cos(yaw)]])

    # Centre: per axis, midpoint if both ends are seen; otherwise anchored at the seen end.
    local = xy @ axes.T
    lo = np.percentile(local, 2, axis=0)
    hi = np.percentile(local, 98, axis=0)
    extent = hi - lo
    sensor = axes @ scene.origin
    cuts = _cut_ends(scene, members, outline=outline, axes=axes, box=box, config=config)
    prior_size = (prior.length_m, prior.width_m)
    max_size = (prior.max_length_m, prior.max_width_m)
    center_local = np.zeros(2)
    size = [0.0, 0.0]
    for k in range(2):
        plausible = extent[k] <= max_size[k]
        size[k] = float(max(prior_size[k], extent[k])) if plausible else prior_size[k]
        cut_lo, cut_hi = (k, _LO) in cuts, (k, _HI) in cuts
        whole = plausible and extent[k] >= config.full_extent_fraction * prior_size[k]
        if whole and not (cut_lo or cut_hi):
            anchor = None
        elif cut_lo and not cut_hi:
            anchor = _HI
        elif cut_hi and not cut_lo:
            anchor = _LO
        elif cut_lo and cut_hi:
            anchor = None
        elif sensor[k] < lo[k]:
            anchor = _LO  # the far (hi) face is hidden by the object itself
        elif sensor[k] > hi[k]:
            anchor = _HI
        else:
            anchor = None  # seen broadside: no end is favoured
        if anchor is None:
            center_local[k] = 0.5 * (lo[k] + hi[k])
        elif anchor == _LO:
            center_local[k] = lo[k] + 0.5 * size[k]
        else:
            center_local[k] = hi[k] - 0.5 * size[k]
    center_xy = axes.T @ center_local

    ground_z = float(scene.ground.plane.z_at(center_xy)[0]) + float(
        _local_offset(scene.ground, center_xy.reshape(1, 2))[0]
    )
    top = float(scene.height[members].max())
    height = top if prior.height_m < top <= prior.max_height_m else prior.height_m
    coverage_support = min(1.0, cluster.coverage / config.full_support_coverage)
    fused_score = score * (1.0 - config.lidar_support_weight * (1.0 - coverage_support))
    return Detection3D(
        label=label,
        score=float(fused_score),
        center=(float(center_xy[0]), float(center_xy[1]), ground_z + 0.5 * height),
        size=(size[0], size[1], float(height)),
        yaw=float(yaw),
        sources=("camera", "lidar"),
        camera_box=CameraBox(camera_name, x1, y1, x2, y2),
    )


# --------------------------------------------------------------------------------------------
# Postprocess


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
