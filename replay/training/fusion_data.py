"""Training samples of the learned fusion engine: painted, augmented, with CenterPoint targets.

`prepare` runs the camera detector on a sample's images and paints its points once
(perception.pipeline.painting, as the node does); `augment` applies the global augmentations
(rotation about z, scaling, mirror across the x axis) and the modality dropout (camera removed,
camera blind, half the beams removed) to painted points and boxes together; `make_targets` draws
the heatmaps (a Gaussian per object, CenterPoint's radius) and the regression targets at each
object's centre cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from engines.camera.detector import Box2D
from engines.checks import check_number, check_probability, check_range
from engines.fusion.learned_config import REGRESSION_CHANNELS, LearnedFusionConfig
from perception.pipeline.painting import PaintView, paint_points
from replay.training.samples import TrainingSample

__all__ = [
    "AugmentConfig",
    "DropoutConfig",
    "PreparedSample",
    "Targets",
    "augment",
    "beam_mask",
    "gaussian_radius",
    "make_targets",
    "prepare",
    "thin_beams",
]

#: The largest number of objects one sample's targets hold (the rest are dropped, farthest
#: first).
MAX_OBJECTS = 128
#: Smallest heatmap radius in cells (CenterPoint's ``min_radius``).
MIN_RADIUS = 2
#: Points are kept this far beyond the grid so that a rotation does not empty its border.
_MARGIN_M = 8.0
#: Elevation step of one beam when beams are thinned (degrees; an HDL-64E's ~0.4).
BEAM_STEP_DEG = 0.42

Detect = Callable[[npt.NDArray[np.uint8]], Sequence[Box2D]]


@dataclass(frozen=True)
class PreparedSample:
    """A sample ready for augmentation: ``points`` N x (4 + painted) float32, ``boxes`` M x 11
    float32 rows of (class index, x, y, z, length, width, height, yaw, vx, vy, visibility) with
    NaN velocity and visibility where unknown, ``ignore`` J x 7 rows (x, y, z, l, w, h, yaw)
    of objects that are not a training class (no negative loss under them)."""

    name: str
    points: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]
    ignore: npt.NDArray[np.float32]


def prepare(
    sample: TrainingSample,
    detect: Detect | None,
    config: LearnedFusionConfig,
    image_transform: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
) -> PreparedSample:
    """Paints ``sample``'s points with ``detect``'s boxes on each of its images (``None``: no
    camera; ``image_transform`` changes each image first, e.g. darkens it) and converts its
    boxes; points outside the grid (plus a margin) are dropped."""
    views = []
    if detect is not None:
        for view in sample.cameras.values():
            image = view.image if image_transform is None else image_transform(view.image)
            views.append(PaintView(view.model, view.camera_from_vehicle, detect(image)))
    points = paint_points(sample.points, views, config.classes)
    (x0, x1), (y0, y1) = config.x_range_m, config.y_range_m
    r = np.hypot(np.clip(points[:, 0], x0, x1) - points[:, 0], np.clip(points[:, 1], y0, y1)
                 - points[:, 1])  # fmt: skip
    points = points[r <= _MARGIN_M]
    rows = []
    for box in sample.boxes:
        c = config.class_index(box.label)
        if c >= 0:
            rows.append([c, *box.center, *box.size, box.yaw, *box.velocity, box.visibility])
    ignore_rows = []
    for box in sample.extra.get("ignore", ()):  # type: ignore[attr-defined]
        ignore_rows.append([*box.center, *box.size, box.yaw])
    return PreparedSample(
        sample.name,
        points.astype(np.float32),
        np.asarray(rows, np.float32).reshape(-1, 11),
        np.asarray(ignore_rows, np.float32).reshape(-1, 7),
    )


@dataclass(frozen=True)
class AugmentConfig:
    """Global augmentations: rotation about z uniform in +-``rotate_deg`` (0 to 180), scaling
    uniform in ``scale`` ([low, high], 0 < low <= high <= 10), mirror across the x axis with
    probability ``flip_y``.

    Raises:
        ValueError: a value out of its range (one line naming the key).
    """

    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.95, 1.05)
    flip_y: float = 0.5

    def __post_init__(self) -> None:
        # Checked when the config is read: numpy would refuse a reversed range only once the
        # samples are prepared (minutes in).
        check_number(self.rotate_deg, "augment.rotate_deg", 0.0, 180.0)
        # Up to 10x: beyond that the objects leave the grid and the sizes the head can learn.
        check_range(self.scale, "augment.scale", 0.0, 10.0, above_low=True)
        check_probability(self.flip_y, "augment.flip_y")


@dataclass(frozen=True)
class DropoutConfig:
    """Modality dropout, probabilities per sample: ``camera`` removes the cameras (painted
    channels and flag zero, as a missing camera is painted), ``camera_blind`` keeps the flag
    but zeroes the scores (a dark or blinded camera that finds nothing), ``beams`` keeps every
    other beam (by elevation). ``object_returns`` is per object, not per sample: the object
    keeps only a fraction in ``object_keep`` of its lidar returns, as a black or wet car does
    on a real lidar, so that the camera is what finds it."""

    camera: float = 0.2
    camera_blind: float = 0.1
    beams: float = 0.15
    object_returns: float = 0.0
    object_keep: tuple[float, float] = (0.1, 0.4)

    def __post_init__(self) -> None:
        check_range(self.object_keep, "dropout.object_keep", 0.0, 1.0)
        for name in ("camera", "camera_blind", "beams", "object_returns"):
            check_probability(getattr(self, name), f"dropout.{name}")
        if self.camera + self.camera_blind > 1.0:
            raise ValueError("dropout.camera + dropout.camera_blind must be <= 1")


def beam_mask(points: npt.NDArray[np.float32], keep_every: int = 2) -> npt.NDArray[np.bool_]:
    """Which of ``points`` lie on every ``keep_every``-th beam: beams are told apart by
    elevation (seen from the origin of the points' frame, the lidar for KITTI and the synthetic
    rig) in steps of :data:`BEAM_STEP_DEG`."""
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    beam = np.floor(elevation / BEAM_STEP_DEG).astype(np.int64)
    mask: npt.NDArray[np.bool_] = beam % keep_every == 0
    return mask


def thin_beams(points: npt.NDArray[np.float32], keep_every: int = 2) -> npt.NDArray[np.float32]:
    """``points`` with only every ``keep_every``-th beam (``beam_mask``)."""
    kept: npt.NDArray[np.float32] = points[beam_mask(points, keep_every)]
    return kept


def drop_object_returns(
    points: npt.NDArray[np.float32],
    boxes: npt.NDArray[np.float32],
    rng: np.random.Generator,
    probability: float,
    keep: tuple[float, float],
) -> npt.NDArray[np.float32]:
    """``points`` where each of ``boxes`` (``PreparedSample`` rows), with ``probability``, keeps
    only a random fraction (uniform in ``keep``) of the returns inside it."""
    if probability <= 0.0 or len(boxes) == 0:
        return points
    dropped = np.zeros(len(points), bool)
    for box in boxes[rng.random(len(boxes)) < probability]:
        _, x, y, z, length, width, height, yaw = (float(v) for v in box[:8])
        c, s = math.cos(yaw), math.sin(yaw)
        dx, dy = points[:, 0] - x, points[:, 1] - y
        inside = (
            (np.abs(c * dx + s * dy) <= length / 2 + 0.1)
            & (np.abs(-s * dx + c * dy) <= width / 2 + 0.1)
            & (np.abs(points[:, 2] - z) <= height / 2 + 0.1)
        )
        dropped |= inside & (rng.random(len(points)) >= rng.uniform(*keep))
    kept: npt.NDArray[np.float32] = points[~dropped]
    return kept


def augment(
    sample: PreparedSample,
    rng: np.random.Generator,
    augment_config: AugmentConfig,
    dropout: DropoutConfig,
    config: LearnedFusionConfig,
) -> PreparedSample:
    """A randomly augmented copy of ``sample`` (points and boxes moved together)."""
    pts = sample.points.copy()
    boxes = sample.boxes.copy()
    ignore = sample.ignore.copy()
    # Raw points: x, y, z, intensity, then the painted channels (the scores, the flag last).
    painted = slice(4, 4 + len(config.classes) + 1)
    u = rng.random()
    if u < dropout.camera:
        pts[:, painted] = 0.0
    elif u < dropout.camera + dropout.camera_blind:
        pts[:, painted.start : painted.stop - 1] = 0.0
    if rng.random() < dropout.beams:
        pts = thin_beams(pts)
    pts = drop_object_returns(pts, boxes, rng, dropout.object_returns, dropout.object_keep)
    if rng.random() < augment_config.flip_y:
        pts[:, 1] *= -1.0
        boxes[:, 2] *= -1.0
        boxes[:, 7] *= -1.0
        boxes[:, 9] *= -1.0
        ignore[:, 1] *= -1.0
        ignore[:, 6] *= -1.0
    angle = math.radians(rng.uniform(-augment_config.rotate_deg, augment_config.rotate_deg))
    scale = rng.uniform(*augment_config.scale)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32) * np.float32(scale)
    pts[:, :2] = pts[:, :2] @ rot.T
    pts[:, 2] *= scale
    boxes[:, 1:3] = boxes[:, 1:3] @ rot.T
    boxes[:, 3:7] *= scale
    boxes[:, 7] = (boxes[:, 7] + angle + math.pi) % (2 * math.pi) - math.pi
    boxes[:, 8:10] = boxes[:, 8:10] @ rot.T
    ignore[:, :2] = ignore[:, :2] @ rot.T
    ignore[:, 2:6] *= scale
    ignore[:, 6] += angle
    return replace(sample, points=pts, boxes=boxes, ignore=ignore)


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius (cells) within which a box of this size keeps ``min_overlap`` IoU
    with the true one (the smallest of its three cases)."""
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


@dataclass(frozen=True)
class Targets:
    """One sample's targets: ``heatmap`` [classes, hx, hy] in [0, 1]; ``negative_weight``
    [hx, hy] (0 under ignored objects); per object (padded to MAX_OBJECTS) ``index`` (flat
    cell), ``mask`` (1 for a real object), ``regression`` [MAX_OBJECTS, channels] and
    ``velocity_known``."""

    heatmap: npt.NDArray[np.float32]
    negative_weight: npt.NDArray[np.float32]
    index: npt.NDArray[np.int64]
    mask: npt.NDArray[np.float32]
    regression: npt.NDArray[np.float32]
    velocity_known: npt.NDArray[np.float32]


def _draw(heat: npt.NDArray[np.float32], ix: int, iy: int, radius: int) -> None:
    sigma = (2 * radius + 1) / 6.0
    hx, hy = heat.shape
    x0, x1 = max(0, ix - radius), min(hx, ix + radius + 1)
    y0, y1 = max(0, iy - radius), min(hy, iy + radius + 1)
    gx = np.arange(x0, x1) - ix
    gy = np.arange(y0, y1) - iy
    g = np.exp(-(gx[:, None] ** 2 + gy[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)
    np.maximum(heat[x0:x1, y0:y1], g, out=heat[x0:x1, y0:y1])


def make_targets(sample: PreparedSample, config: LearnedFusionConfig) -> Targets:
    """The head's targets for ``sample``'s boxes (those whose centre falls in the grid)."""
    hx, hy = config.head_size
    cell = config.cell_m
    x0, y0 = config.x_range_m[0], config.y_range_m[0]
    heat = np.zeros((len(config.classes), hx, hy), np.float32)
    negative = np.ones((hx, hy), np.float32)
    index = np.zeros(MAX_OBJECTS, np.int64)
    mask = np.zeros(MAX_OBJECTS, np.float32)
    reg = np.zeros((MAX_OBJECTS, len(REGRESSION_CHANNELS)), np.float32)
    vel_known = np.zeros(MAX_OBJECTS, np.float32)
    for row in sample.ignore:
        fx, fy = (row[0] - x0) / cell, (row[1] - y0) / cell
        r = max(1, math.ceil(0.5 * max(row[3], row[4]) / cell))
        ix, iy = math.floor(fx), math.floor(fy)
        negative[max(0, ix - r) : max(0, ix + r + 1), max(0, iy - r) : max(0, iy + r + 1)] = 0.0
    order = np.argsort(np.hypot(sample.boxes[:, 1], sample.boxes[:, 2]), kind="stable")
    k = 0
    for row in sample.boxes[order]:
        cls = int(row[0])
        fx, fy = (row[1] - x0) / cell, (row[2] - y0) / cell
        ix, iy = math.floor(fx), math.floor(fy)
        if not (0 <= ix < hx and 0 <= iy < hy) or k >= MAX_OBJECTS:
            continue
        radius = max(MIN_RADIUS, int(gaussian_radius(row[4] / cell, row[5] / cell)))
        _draw(heat[cls], ix, iy, radius)
        index[k] = ix * hy + iy
        mask[k] = 1.0
        yaw = float(row[7])
        vx, vy = float(row[8]), float(row[9])
        known = math.isfinite(vx) and math.isfinite(vy)
        size = [math.log(float(v)) for v in row[4:7]]
        velocity = [vx, vy] if known else [0.0, 0.0]
        reg[k] = [fx - ix, fy - iy, row[3], *size, math.sin(yaw), math.cos(yaw), *velocity]
        vel_known[k] = float(known)
        k += 1
    return Targets(heat, negative, index, mask, reg, vel_known)
