"""Calibration monitor: is a camera's extrinsic still aligned with the lidar, and if not, by how
much has it moved?

One frame says little (a 1-degree error moves the single-frame score by less than its
frame-to-frame spread), so evidence is pooled over many frames (Pandey et al., AAAI 2012; the
accumulation of Levinson and Thrun, RSS 2013): for each candidate correction of the extrinsic,
the joint histogram of lidar intensity and image grey level at the projected points is summed
over the newest ``window_frames`` frames, and its mutual information (MI) is the candidate's
score. benchmarks/RESULTS.md measures why MI and not depth edges.

The search is local: the candidates are the current centre and steps of ``step_deg`` /
``step_m`` (one and two) along each of the six axes, rotations about and translations along the
vehicle axes, about the camera's centre. A quadratic through each axis' five scores gives the
peak. How far the peak moves between folds of frames (the jackknife) weighs the decision; the
uncertainty reported adds the score's own systematic error (``systematic_rotation_deg`` /
``systematic_translation_m``, measured), and a translation along the optical axis, which the
prior pins, is reported unobserved. Where an axis' peak lies beyond the
candidates (a large error), the centre moves there and the evidence starts over; an axis whose
scores are flat (a translation along the optical axis changes the projection very little) is
not significant and moves nothing. Pitch and height (and yaw and a sideways shift) move the
image alike: their scores form a ridge along which one axis' fit, holding the other, cannot
move. Each ridge has candidates of its own (the pair's combination that moves the first
frame's pixels least), and a significant peak along it sends the search there too.

A correction is drift where an axis of it is beyond its threshold, or where it moves the
points in the image by more than ``flag_pixels`` whatever its axes (a fit that splits one image
shift between a pitch and a height, each under its threshold, still corrects pixels), in either
case significantly and precisely. Hysteresis: drift is flagged only after ``flag_after``
consecutive evaluations find such a correction, and cleared after ``clear_after`` that do not.
The correction reported with a drift is refined (`CalibrationMonitor.refine`): a joint search
on the window's MI with each point's vote split between grey levels, a smoother score than the
hard counts the fits and the decisions use (benchmarks/RESULTS.md: within 2 cm in 32 of 40
shifts on ten rich worlds, against 25 unrefined). Where the frames came with the ground plane
(the pipeline's), the refine also counts the intensity levels of the points on the ground
apart from those above it (``ground_clearance_m``): the road's paint and asphalt relate
intensity to grey otherwise than walls and poles do, and the MI of (class, intensity) with
grey also scores where the ground meets what stands on it in the image. The fits and the
decisions pool the classes: decided on the classes, the true rig was flagged within two
minutes of one rich world (benchmarks/RESULTS.md).
Frames with too few points, too little image contrast (a textureless scene, a dark image) or
lidar intensities without contrast (a lidar or driver that reports none), and frames taken
without moving (a stopped vehicle repeats the same evidence) are skipped and
counted, so neither raises an alarm. A window that pools no more mutual information than
unrelated data would (``min_information_nats``: a camera that sees nothing the lidar sees) is
not judged at all: its fits have no peak to find, and "aligned" would claim what nothing showed.
Nor is one in which almost nothing stands above the ground (``min_structure_share``): the road
and what moves on it cannot check a rig, and there the verdict hung on luck.

Points given to the monitor are in the vehicle frame at the camera's exposure (the caller
compensates the ego motion), N x 4 with the intensity last; points on detected objects should
be left out by the caller (``object_mask``): moving objects are not where the lidar saw them
when the camera exposed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from calibration.pooled import FrameEvidence, PooledEvidence, histograms
from calibration.rig import VEHICLE_FRAME, Rig, camera_frame
from calibration.transforms import RigidTransform

__all__ = [
    "AXES",
    "SKIP_FEW_POINTS",
    "SKIP_FLAT_IMAGE",
    "SKIP_FLAT_INTENSITY",
    "SKIP_STILL",
    "CalibrationEstimate",
    "CalibrationMonitor",
    "Correction",
    "Fit",
    "MonitorConfig",
    "MonitorState",
    "apply_correction",
    "corrected_rig",
    "is_drift",
    "no_evidence_text",
    "object_mask",
    "skip_text",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: The six axes of a correction: rotations about the vehicle's x, y, z (roll, pitch, yaw) and
#: translations along them.
AXES = ("roll", "pitch", "yaw", "x", "y", "z")
#: Candidate offsets along each axis, in steps.
_OFFSETS = (-2.0, -1.0, 1.0, 2.0)
#: A peak further than this (steps) from the centre is not trusted: the centre moves instead.
_REACH_STEPS = 2.5
#: Pairs of axes that move the image alike (a pitch shifts every pixel up, a height change the
#: near ones more; a yaw and a sideways shift likewise): their scores form a ridge, along which
#: the axes' own fits cannot move (each holds the other fixed). The ridges are watched too.
_RIDGE_PAIRS = ((1, 5), (2, 4))
#: The prior's curvature toward the rig, as a fraction of the sharpest axis' curvature.
PRIOR_FRACTION = 0.005
#: The prior's curvature on a translation along the camera's optical axis, as a fraction of
#: the sharpest axis' curvature (that translation is barely observable: it is pinned).
OPTICAL_AXIS_PRIOR = 0.5
#: Why a frame is skipped (`CalibrationMonitor.skipped_by`).
SKIP_FEW_POINTS = "too few lidar points in the image"
SKIP_FLAT_INTENSITY = "no contrast in the lidar's intensity"
SKIP_FLAT_IMAGE = "too little image contrast"
SKIP_STILL = "taken without moving"


def skip_text(skipped_by: Mapping[str, int]) -> str:
    """Skipped frames by why, for a person: "2 too few lidar points in the image, 1 taken
    without moving" (reasons in a fixed order)."""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(skipped_by.items()))


#: At most this many times `max_points` points of a sweep are looked at.
_PRESELECT = 6
#: Folds of frames for the jackknife's uncertainty.
_FOLDS = 5
#: The object mask's coarse raster: its cell (m) and the most cells it may have.
_RASTER_CELL_M = 0.25
_RASTER_MAX_CELLS = 4_000_000
#: Up to this many point-box pairs, the object mask tests every candidate against every box at
#: once; beyond, box by box over the candidates within reach.
_MASK_BATCH_ELEMENTS = 1 << 20
#: Significance of an axis' estimate: its distance from zero in standard deviations.
_SIGNIFICANT_SIGMA = 3.0
#: Points of each frame whose motion in the image measures a correction (`image_motion_px`).
_MOTION_POINTS = 100
#: A vehicle axis on which the camera's optical axis has more than this component (75
#: degrees or nearer) is reported unobserved for translations.
_UNOBSERVED_COMPONENT = 0.25


#: The most of what the monitor holds or does per evaluation: 256 grey levels, a sweep's
#: points, 100 s of frames at 10 Hz, a search's evaluations.
_MOST = {"bins": 256, "max_points": 200_000, "window_frames": 1000, "max_evaluations": 100_000}


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor accumulates evidence and decides (see the module docstring)."""

    bins: int = 24
    """Intensity and grey levels per axis of the joint histogram."""
    max_points: int = 3000
    """Points per frame (a random subset beyond it)."""
    step_deg: float = 0.25
    """The local search's rotation step."""
    step_m: float = 0.025
    """The local search's translation step."""
    window_frames: int = 50
    """Frames whose evidence is pooled (the newest)."""
    min_frames: int = 12
    """Frames before the first verdict."""
    evaluate_every: int = 5
    """Frames between two fits of the evidence."""
    flag_rotation_deg: float = 0.25
    """The smallest rotation correction (about any axis) that is drift."""
    flag_translation_m: float = 0.03
    """The smallest translation correction (along any axis) that is drift."""
    flag_pixels: float = 2.5
    """A correction that moves the window's points by more than this in the image (median,
    px) is drift too, whatever its axes, where it is significant and precise as an axis must
    be: a translation across the optical axis and a rotation move the image alike (a pitch
    much like a height change), so the fit can split a 5 cm shift into a rotation and a shift
    each under its threshold while the projection it corrects is pixels off. 0: off."""
    systematic_rotation_deg: float = 0.08
    """The score's own error on a rotation, added to the folds' spread in the reported
    uncertainty: the folds see the noise of the frames, not the bias of the score, which sets
    most of the error. Measured on rich synthetic worlds (seeds 1-6, 10 s windows: half the
    95th percentile of the rotation errors); set your rig's own where it is measured."""
    systematic_translation_m: float = 0.02
    """The same for a translation across the camera's optical axis (rich worlds: 95th
    percentile 4.0 cm). Along the optical axis a translation is reported unobserved."""
    flag_after: int = 2
    """Consecutive fits finding drift before it is flagged."""
    clear_after: int = 4
    """Consecutive fits finding none before a flag is cleared."""
    min_points: int = 300
    """A frame with fewer points in the image is skipped."""
    min_contrast: float = 0.04
    """A frame whose grey level spread (standard deviation, 0-1) at the points is below this
    is skipped (a textureless or dark image)."""
    min_travel_m: float = 0.2
    """A frame taken less than this from the last one used is skipped (a stopped vehicle
    repeats the same evidence); 0: never."""
    max_evaluations: int = 400
    """The joint search's budget of window scores: each climb from one of its starts spends at
    most half of it (a search climbs from two to four)."""
    min_information_nats: float = 0.02
    """A window whose pooled MI at the centre is below this, or below twice what unrelated
    points and pixels score (the estimator's bias, (bins - 1)^2 / 2N for N points: 0.011 for
    eight KITTI frames), holds no evidence to judge by: no fit and no search, the verdict stays
    as it was (``collecting`` until one is reached). The KITTI frames pool 0.064, the rich
    synthetic world 0.2-0.5; 0: judge whenever the bias allows."""
    min_structure_share: float = 0.05
    """A window in which fewer than this share of the points stand above the ground
    (``ground_clearance_m``; frames without a ground plane count all of theirs) holds no
    evidence to judge by either, however much MI it pools: the ground and what moves on it
    (vehicles the detector missed, which are not where the lidar saw them) cannot check a rig,
    and on such a road (the simple synthetic world: 1.3-2.0% of the points in view) the verdict
    hung on luck, the true rig's often called drifted. The rich synthetic worlds pool 14-22%,
    the KITTI frames 24%. 0: off."""

    ground_clearance_m: float = 0.3
    """Points within this of the ground plane handed with a frame (`CalibrationMonitor.add`)
    are the ground's: the refine of a drift's correction counts their intensity levels apart
    from those of the points above it. The road's paint and asphalt relate intensity to grey
    otherwise than walls, poles and vehicles do, and pooled together each blurs the other's
    relation; apart, where the ground meets what stands on it in the image counts as evidence
    too. The fits and the decisions pool both classes. 0: one class (as without a plane)."""

    def __post_init__(self) -> None:
        positive = ("step_deg", "step_m", "flag_rotation_deg")
        for name in ("systematic_rotation_deg", "systematic_translation_m", "ground_clearance_m"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be >= 0, got {value!r}")
        for name in (*positive, "flag_translation_m"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be > 0, got {value!r}")
        names = ("bins", "max_points", "window_frames", "min_frames", "evaluate_every")
        for name in (*names, "flag_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        for name in ("clear_after", "min_points", "max_evaluations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        for name in ("min_contrast", "min_travel_m", "min_information_nats", "flag_pixels"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be >= 0, got {value!r}")
        share = self.min_structure_share
        if not (isinstance(share, int | float) and 0 <= share <= 1):
            raise ValueError(f"min_structure_share: must be in [0, 1], got {share!r}")
        if self.min_frames > self.window_frames:
            raise ValueError(
                f"min_frames: must be <= window_frames "
                f"({self.window_frames}), got {self.min_frames}"
            )
        if self.min_points > self.max_points:
            # A frame keeps at most max_points: every one would be skipped for too few.
            raise ValueError(
                f"min_points: must be <= max_points ({self.max_points}), got {self.min_points}"
            )
        if self.bins < 4:
            raise ValueError(f"bins: must be >= 4, got {self.bins}")
        for name, most in _MOST.items():
            value = getattr(self, name)
            if value > most:
                # The window's histograms and points are held in memory: a typo would be a
                # MemoryError in the monitor's thread, not a config error at start.
                raise ValueError(f"{name}: must be at most {most:,}, got {value:,}")


@dataclass(frozen=True)
class Correction:
    """A change of a camera's extrinsic in the vehicle axes: ``rotation_deg`` (a rotation
    vector, degrees, about the camera's centre) and ``translation_m`` of the camera."""

    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def from_vector(v: npt.ArrayLike) -> Correction:
        """From six values: rotation (rad) about x, y, z, then translation (m)."""
        a = np.asarray(v, dtype=np.float64).reshape(6)
        rot = tuple(float(math.degrees(x)) for x in a[:3])
        return Correction((rot[0], rot[1], rot[2]), (float(a[3]), float(a[4]), float(a[5])))

    def vector(self) -> FloatArray:
        """Six values: rotation (rad) about x, y, z, then translation (m)."""
        return np.array([*np.radians(self.rotation_deg), *self.translation_m], dtype=np.float64)

    def inverse(self) -> Correction:
        """The correction that undoes this one (exact for the rotation's axis-angle)."""
        return Correction(
            (-self.rotation_deg[0], -self.rotation_deg[1], -self.rotation_deg[2]),
            (-self.translation_m[0], -self.translation_m[1], -self.translation_m[2]),
        )

    @property
    def angle_deg(self) -> float:
        """The rotation's angle (degrees)."""
        return float(np.linalg.norm(self.rotation_deg))

    @property
    def distance_m(self) -> float:
        """The translation's length (m)."""
        return float(np.linalg.norm(self.translation_m))


def apply_correction(vehicle_from_camera: RigidTransform, correction: Correction) -> RigidTransform:
    """``vehicle_from_camera`` with the camera rotated about its own centre by the correction's
    rotation (vehicle axes) and moved by its translation."""
    return _perturbed(vehicle_from_camera.matrix, correction.vector())


def corrected_rig(rig: Rig, camera: str, correction: Correction) -> Rig:
    """``rig`` with camera ``camera``'s extrinsic corrected by ``correction``."""
    frame = camera_frame(camera)
    vehicle_from_camera = apply_correction(rig.transform(VEHICLE_FRAME, frame), correction)
    return rig.with_vehicle_from(frame, vehicle_from_camera)


def _perturbed(vehicle_from_camera: FloatArray, v: FloatArray) -> RigidTransform:
    r, _ = cv2.Rodrigues(np.asarray(v[:3], dtype=np.float64).reshape(3, 1))
    m = np.eye(4)
    m[:3, :3] = r @ vehicle_from_camera[:3, :3]
    m[:3, 3] = vehicle_from_camera[:3, 3] + v[3:]
    return RigidTransform(m)


def object_mask(
    points: npt.NDArray[np.floating],
    boxes: Sequence[tuple[Sequence[float], Sequence[float], float]],
    margin_m: float = 0.3,
) -> BoolArray:
    """Which of ``points`` (N x 3+, the boxes' frame) lie inside any of ``boxes`` (centre,
    size (length, width, height), yaw), grown by ``margin_m``. A point with a non-finite
    coordinate is in none."""
    if len(boxes) == 0 or len(points) == 0:
        return np.zeros(len(points), dtype=bool)
    p = np.asarray(points[:, :3], dtype=np.float64)
    finite = np.isfinite(p).all(axis=1)
    if not finite.all():
        # The points' extent and raster are taken over finite points only: one NaN made the
        # extent NaN, and then no point was inside any box.
        out = np.zeros(len(points), dtype=bool)
        out[finite] = object_mask(p[finite], boxes, margin_m)
        return out
    centre = np.array([b[0][:3] for b in boxes], dtype=np.float64)
    half = np.array([b[1][:3] for b in boxes], dtype=np.float64) / 2.0 + margin_m
    yaw = np.array([b[2] for b in boxes], dtype=np.float64)
    # Only the boxes that reach the points' extent.
    reach = np.hypot(half[:, 0], half[:, 1])
    lo = p[:, :2].min(axis=0)
    hi = p[:, :2].max(axis=0)
    low_ok = centre[:, :2] + reach[:, None] >= lo
    high_ok = centre[:, :2] - reach[:, None] <= hi
    near = np.all(low_ok & high_ok, axis=1)
    if not near.any():
        return np.zeros(len(points), dtype=bool)
    centre, half, yaw, reach = centre[near], half[near], yaw[near], reach[near]
    candidates = _footprint_candidates(p[:, :2], centre[:, :2], half[:, :2], yaw, lo)
    out = np.zeros(len(points), dtype=bool)
    if candidates is None:
        candidates = np.arange(len(points))
    if len(candidates) == 0:
        return out
    c, s = np.cos(yaw), np.sin(yaw)
    if len(candidates) * len(yaw) <= _MASK_BATCH_ELEMENTS:
        # Every candidate against every box at once: cheap for the node's few boxes.
        q = p[candidates]
        dx, dy = q[:, :1] - centre[:, 0], q[:, 1:2] - centre[:, 1]
        inside = _inside(dx, dy, q[:, 2:3] - centre[:, 2], c=c, s=s, half=half)
        out[candidates] = inside.any(axis=1)
        return out
    # A whole sweep among a hundred boxes (the test bed's ground truth): each box tests only
    # the candidates within its reach, found as a range of them sorted along x. The same
    # arithmetic per point and box as the batch, so either way gives the same mask.
    order = candidates[np.argsort(p[candidates, 0], kind="stable")]
    xs = p[order, 0]
    first = np.searchsorted(xs, centre[:, 0] - reach, side="left")
    last = np.searchsorted(xs, centre[:, 0] + reach, side="right")
    for k in range(len(yaw)):
        rows = order[first[k] : last[k]]
        q = p[rows]
        dx, dy = q[:, 0] - centre[k, 0], q[:, 1] - centre[k, 1]
        out[rows[_inside(dx, dy, q[:, 2] - centre[k, 2], c=c[k], s=s[k], half=half[k])]] = True
    return out


def _inside(
    dx: FloatArray,
    dy: FloatArray,
    dz: FloatArray,
    *,
    c: FloatArray | float,
    s: FloatArray | float,
    half: FloatArray,
) -> BoolArray:
    """Whether offsets (dx, dy, dz) from boxes' centres lie within their half sizes ``half``
    (the last axis: length, width, height) along the boxes' axes (heading cosine ``c``, sine
    ``s``); broadcast over points and boxes."""
    inside: BoolArray = (
        (np.abs(c * dx + s * dy) <= half[..., 0])
        & (np.abs(-s * dx + c * dy) <= half[..., 1])
        & (np.abs(dz) <= half[..., 2])
    )
    return inside


def _footprint_candidates(
    xy: FloatArray, centre: FloatArray, half: FloatArray, yaw: FloatArray, lo: FloatArray
) -> npt.NDArray[np.intp] | None:
    """The points (indices into ``xy``) on cells of a coarse bird's-eye raster that any box's
    footprint, grown by two cells, touches: a superset of the points inside the boxes, so
    that the exact test runs on a few hundred points instead of every point against every box
    (N x B). None where the raster would be too large to be cheaper."""
    cell = _RASTER_CELL_M
    origin = lo - 3.0 * cell
    grown = half + 2.0 * cell
    c, s = np.cos(yaw), np.sin(yaw)
    signs = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    local = signs[None] * grown[:, None, :]
    corners = np.stack(
        [
            centre[:, None, 0] + c[:, None] * local[..., 0] - s[:, None] * local[..., 1],
            centre[:, None, 1] + s[:, None] * local[..., 0] + c[:, None] * local[..., 1],
        ],
        axis=-1,
    )
    cells = np.floor((xy - origin) / cell).astype(np.int64)
    width, height = int(cells[:, 0].max()) + 4, int(cells[:, 1].max()) + 4
    if width * height > _RASTER_MAX_CELLS:
        return None
    raster = np.zeros((height, width), dtype=np.uint8)
    polygons = np.round((corners - origin) / cell - 0.5).astype(np.int32)
    # One polygon at a time: fillPoly's scanline over several polygons leaves their overlaps
    # unfilled (even-odd).
    for polygon in polygons:
        cv2.fillConvexPoly(raster, polygon, 1)
    hit: npt.NDArray[np.intp] = np.flatnonzero(raster[cells[:, 1], cells[:, 0]])
    return hit


class MonitorState:
    """Verdicts: ``collecting`` (too few frames, or too little evidence, yet), ``aligned`` or
    ``drifted``."""

    COLLECTING = "collecting"
    ALIGNED = "aligned"
    DRIFTED = "drifted"


@dataclass(frozen=True)
class CalibrationEstimate:
    """What the monitor believes of one camera: its ``state``; the ``correction`` that best
    aligns the camera with the lidar (apply it with `apply_correction`) and its standard
    deviation per axis (``sigma``: degrees for rotations, metres for translations: the spread
    of the estimate over folds of frames with the score's systematic error added; inf where an
    axis is not observed, as a vehicle axis along the camera's optical axis); the frames used
    and skipped; ``score``, the MI (nats) of the candidate at the centre of the search;
    ``image_motion_px``, how far the correction moves the points in the image (median, px; NaN
    before the first fit), and its standard deviation ``image_motion_sigma_px`` (the folds'
    spread); ``structure_share``, the share of the window's points that stand above the
    ground (1 where frames came without a ground plane; NaN before any frame)."""

    state: str
    correction: Correction = field(default_factory=Correction)
    sigma: tuple[float, float, float, float, float, float] = (math.inf,) * 6
    frames: int = 0
    skipped: int = 0
    score: float = 0.0
    image_motion_px: float = math.nan
    image_motion_sigma_px: float = math.nan
    structure_share: float = math.nan


def no_evidence_text(estimate: CalibrationEstimate, config: MonitorConfig) -> str:
    """Why a window with `estimate` (its `score` the MI it pooled at the centre) holds no
    evidence to judge by: too little above the ground (``min_structure_share``), or no more MI
    than unrelated data (``min_information_nats``)."""
    if estimate.structure_share < config.min_structure_share:
        return (
            f"{estimate.structure_share:.1%} of the points in view stand above the ground "
            f"(needed: {config.min_structure_share:.0%}): the road and what moves on it cannot "
            "check a rig"
        )
    return (
        f"the frames pool {estimate.score:.3f} nats of lidar-camera mutual information, no more "
        f"than unrelated data would (needed: {config.min_information_nats:g} and twice the "
        "estimator's bias): the camera sees nothing the lidar sees"
    )


def _mutual_information(joint: npt.ArrayLike) -> FloatArray:
    """The mutual information (nats) of each joint histogram in ``joint`` (... x B x B)."""
    counts = np.asarray(joint, dtype=np.float64)
    total = counts.sum(axis=(-2, -1), keepdims=True)
    p = counts / np.maximum(total, 1.0)
    pa = p.sum(axis=-1, keepdims=True)
    pb = p.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / (pa * pb)), 0.0)
    out: FloatArray = terms.sum(axis=(-2, -1))
    return out


def _quadratic(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    """(curvature a, slope b) of the least-squares quadratic a x^2 + b x + c through (x, y)."""
    design = np.column_stack([x * x, x, np.ones_like(x)])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(beta[0]), float(beta[1])


def _fold_spread(loo: FloatArray) -> FloatArray:
    """The jackknife standard deviation of estimates made leaving out each fold in turn
    (``loo``: one row per fold)."""
    spread: FloatArray = np.sqrt(
        (_FOLDS - 1) / _FOLDS * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0)
    )
    return spread


def _peak(a: float, b: float, prior: float, centre: float) -> float:
    """The maximum of a x^2 + b x - prior (x + centre)^2 (the score less the prior's pull
    toward the rig, ``centre`` steps from the candidates' centre); NaN where there is none."""
    curvature = a - prior
    if curvature >= 0.0:
        return math.nan
    return (b - 2.0 * prior * centre) / (-2.0 * curvature)


@dataclass(frozen=True)
class Fit:
    """One fit of the pooled evidence: the ``correction`` (six values, rad and m, from the
    extrinsic in force), its standard deviation per axis (inf: not observed), the axes whose
    peak lies beyond the candidates (``beyond``: the direction to walk, else 0), the MI of
    the centre and the ``ridge``'s peak."""

    correction: FloatArray
    sigma: FloatArray
    beyond: FloatArray
    score: float
    ridge: FloatArray = field(default_factory=lambda: np.zeros(6))
    """Where a ridge of coupled axes (`_RIDGE_PAIRS`) peaks away from the centre, significantly
    (steps from the centre; zeros where none does): where the search should look."""
    folds: FloatArray = field(default_factory=lambda: np.zeros((0, 6)))
    """The correction fitted leaving out each fold of frames in turn (one row per fold)."""


class CalibrationMonitor:
    """The monitor of one camera (see the module docstring). Feed it frames with `add`; read
    its belief from `estimate`. ``vehicle_from_camera`` is the extrinsic in force (the rig's);
    ``start`` is where the search starts (a correction of it)."""

    def __init__(
        self,
        camera: CameraModel,
        vehicle_from_camera: RigidTransform,
        config: MonitorConfig | None = None,
        *,
        start: Correction | None = None,
        seed: int = 0,
    ) -> None:
        self.camera = camera
        self.config = config or MonitorConfig()
        self.vehicle_from_camera = vehicle_from_camera
        self._rng = np.random.default_rng(seed)
        cfg = self.config
        self._steps = np.array([math.radians(cfg.step_deg)] * 3 + [cfg.step_m] * 3)
        # The joint histograms' point levels: the intensity levels of the points above the
        # ground, then those of the ground's (`ground_clearance_m`; only the refine tells the
        # two apart).
        self._rows = 2 * cfg.bins if cfg.ground_clearance_m > 0 else cfg.bins
        # Candidate offsets from the centre, in steps: the centre, each axis at each offset.
        offsets = [np.zeros(6)]
        for axis in range(6):
            for k in _OFFSETS:
                v = np.zeros(6)
                v[axis] = k
                offsets.append(v)
        self._axis_offsets = np.array(offsets)
        self._offsets = self._axis_offsets
        # The ridges' directions (steps), from the first frame's projection: none until then.
        self._ridges = np.zeros((0, 6))
        self._centre = np.zeros(6) if start is None else start.vector()
        self._projection_cache: tuple[tuple[bytes, bytes], FloatArray] | None = None
        self._window: deque[tuple[FrameEvidence, npt.NDArray[np.int32]]] = deque(
            maxlen=cfg.window_frames
        )
        self._pooled_evidence: PooledEvidence | None = None
        # The window's points' change in the image per step (`image_motion_px`), built on
        # demand, and the last fit's motion (a decision and its estimate ask for it in turn).
        self._motion_jacobian: npt.NDArray[np.float32] | None = None
        self._motion_of: tuple[Fit, tuple[float, float]] | None = None
        self._since_eval = 0
        self._frames = 0
        self._skipped = 0
        self._skipped_by: dict[str, int] = {}
        self._skipped_since_used: dict[str, int] = {}
        self._last_travel_m: float | None = None
        self._beyond = 0
        self._within = 0
        self._estimate = CalibrationEstimate(MonitorState.COLLECTING)
        self._unjudged = False
        self._prior = 0.0
        # The prior's shape: the same pull on every axis (in steps), and a strong one on a
        # translation along the camera's optical axis, which changes the projection so little
        # that the evidence cannot tell it from noise.
        optical = vehicle_from_camera.rotation[:, 2]
        self._prior_shape = np.eye(6)
        pinned = OPTICAL_AXIS_PRIOR / PRIOR_FRACTION
        self._prior_shape[3:, 3:] += pinned * np.outer(optical, optical)
        # The vehicle axes a translation along the optical axis shows in: what the evidence
        # says of them is the prior's pin, not a measurement.
        self._unobserved = np.abs(optical) > _UNOBSERVED_COMPONENT
        rotation = math.radians(cfg.systematic_rotation_deg)
        self._systematic = np.array([rotation] * 3 + [cfg.systematic_translation_m] * 3)

    @property
    def frames(self) -> int:
        """Frames used so far."""
        return self._frames

    @property
    def skipped(self) -> int:
        """Frames skipped so far."""
        return self._skipped

    @property
    def skipped_by(self) -> dict[str, int]:
        """Frames skipped so far, by why (the `SKIP_*` reasons)."""
        return dict(self._skipped_by)

    @property
    def skipped_since_used(self) -> dict[str, int]:
        """Frames skipped since the last one used (or the first), by why."""
        return dict(self._skipped_since_used)

    # -- evidence --------------------------------------------------------------------------

    def add(
        self,
        points: npt.NDArray[np.floating],
        image: npt.NDArray[np.uint8],
        *,
        travelled_m: float | None = None,
        camera: CameraModel | None = None,
        vehicle_from_camera: RigidTransform | None = None,
        exclude: Sequence[tuple[Sequence[float], Sequence[float], float]] = (),
        exclude_margin_m: float = 0.3,
        ground: Sequence[float] | None = None,
    ) -> bool:
        """One frame: ``points`` N x 4 (vehicle frame at the exposure, intensity last) and the
        camera's ``image`` (BGR or grey, distorted as the camera model projects). ``ground``:
        the ground plane in the points' frame (n_x, n_y, n_z, d: n . p + d = 0, n a unit
        vector), whose points are counted apart (``ground_clearance_m``); None: unknown. Points in
        ``exclude`` (boxes: centre, size, yaw, in the points' frame; grown by
        ``exclude_margin_m``) are left out: objects that may have moved between the lidar's
        and the camera's instants.
        ``travelled_m``: the vehicle's odometer (any origin) at the frame, for skipping frames
        taken without moving; None when unknown. ``camera`` and ``vehicle_from_camera``: this
        frame's own, where they differ from the monitor's (frames of several drives, each with
        its calibration, pooled offline). Whether the frame was used.

        Raises ValueError for an image of another size than the camera's, points that are
        not N x 4 or a ground plane that is not four finite values.
        """
        cfg = self.config
        cam_model = camera or self.camera
        if image.ndim not in (2, 3) or image.shape[:2] != (cam_model.height, cam_model.width):
            raise ValueError(
                f"image is {image.shape[1::-1] if image.ndim >= 2 else image.shape}, the camera "
                f"expects {cam_model.width}x{cam_model.height}"
            )
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 4:
            raise ValueError(f"points must be N x 4 (x, y, z, intensity), got {pts.shape}")
        plane = None
        if ground is not None:
            plane = np.asarray(ground, dtype=np.float64)
            if plane.shape != (4,) or not np.all(np.isfinite(plane)):
                raise ValueError(
                    f"ground must be four finite values (n_x, n_y, n_z, d), got {ground}"
                )
        if (
            travelled_m is not None
            and self._last_travel_m is not None
            and abs(travelled_m - self._last_travel_m) < cfg.min_travel_m
        ):
            return self._skip(SKIP_STILL)
        frame = self._frame(
            pts,
            image,
            cam_model,
            vehicle_from_camera or self.vehicle_from_camera,
            exclude=exclude,
            exclude_margin_m=exclude_margin_m,
            ground=plane,
        )
        if isinstance(frame, str):
            return self._skip(frame)
        if not len(self._ridges):
            self._set_ridges(frame)
        self._skipped_since_used.clear()
        self._window.append((frame, self._histograms(frame)))
        self._pooled_evidence = None
        self._motion_jacobian = None
        self._frames += 1
        self._since_eval += 1
        if travelled_m is not None:
            self._last_travel_m = travelled_m
        if len(self._window) >= cfg.min_frames and self._since_eval >= cfg.evaluate_every:
            self._since_eval = 0
            information, share, enough = self._information()
            self._unjudged = not enough
            if enough:
                self._decide(self.search())
                return True
            self._estimate = replace(self._estimate, score=information, structure_share=share)
        self._estimate = replace(self._estimate, frames=self._frames, skipped=self._skipped)
        return True

    @property
    def unjudged(self) -> bool:
        """Whether the last evaluation of the window found no evidence to judge by (see
        `no_evidence_text`): the verdict stays as it was."""
        return self._unjudged

    def information(self) -> float:
        """The MI (nats) the window's frames pool at the search's centre: the evidence there is
        to judge by (0 before any frame)."""
        return self._information()[0]

    def structure_share(self) -> float:
        """The share of the window's points that stand above the ground (NaN before any
        frame; see ``min_structure_share``)."""
        bins = self.config.bins
        total = sum(len(frame.level) for frame, _ in self._window)
        if total == 0:
            return math.nan
        # The ground's points carry levels shifted by `bins` (`_frame`).
        above = sum(int(np.count_nonzero(frame.level < bins)) for frame, _ in self._window)
        return above / total

    def _information(self) -> tuple[float, float, bool]:
        """`information`, `structure_share` and whether the window holds enough to judge by
        (``min_information_nats``, ``min_structure_share``)."""
        if not self._window:
            return 0.0, math.nan, False
        cfg = self.config
        bins = cfg.bins
        joint = np.sum([hist[0] for _, hist in self._window], axis=0, dtype=np.int64)
        information = float(_mutual_information(joint.reshape(bins, bins)))
        bias = (bins - 1) ** 2 / (2.0 * max(int(joint.sum()), 1))
        share = self.structure_share()
        enough = information >= max(cfg.min_information_nats, 2.0 * bias)
        return information, share, enough and share >= cfg.min_structure_share

    def _skip(self, reason: str) -> bool:
        self._skipped += 1
        for counts in (self._skipped_by, self._skipped_since_used):
            counts[reason] = counts.get(reason, 0) + 1
        self._estimate = replace(self._estimate, skipped=self._skipped)
        return False

    def _frame(
        self,
        pts: npt.NDArray[np.floating],
        image: npt.NDArray[np.uint8],
        camera: CameraModel,
        vehicle_from_camera: RigidTransform,
        *,
        exclude: Sequence[tuple[Sequence[float], Sequence[float], float]] = (),
        exclude_margin_m: float = 0.3,
        ground: FloatArray | None = None,
    ) -> FrameEvidence | str:
        """A frame's evidence at the current centre, or why it has none (a `SKIP_*` reason):
        too few points in the image, or too little contrast at them in the image or in the
        lidar's intensity."""
        cfg = self.config
        base = vehicle_from_camera.matrix
        centre_and_steps = self._projections(base)
        m = centre_and_steps[0]
        if len(pts) > _PRESELECT * cfg.max_points:
            # A random share of the sweep first: a camera sees a fraction of it, and the
            # cost of what follows should not grow with the lidar's resolution.
            step = len(pts) // (_PRESELECT * cfg.max_points)
            pts = pts[int(self._rng.integers(step)) :: step]
        xyz = np.asarray(pts[:, :3], dtype=np.float64)
        intensity = np.asarray(pts[:, 3], dtype=np.float64)
        cam = xyz @ m[:, :3].T + m[:, 3]
        # Comparisons with NaN are false: a non-finite point is never near the image.
        with np.errstate(invalid="ignore"):
            idx = np.flatnonzero((cam[:, 2] > 1.0) & np.isfinite(intensity))
        # Pinhole (no distortion) is enough to pick the points near the image.
        k = camera.k
        c = cam[idx]
        with np.errstate(invalid="ignore", over="ignore"):
            u = (k[0, 0] * c[:, 0] + k[0, 1] * c[:, 1] + k[0, 2] * c[:, 2]) / c[:, 2]
            v = (k[1, 1] * c[:, 1] + k[1, 2] * c[:, 2]) / c[:, 2]
            margin = 0.1 * max(camera.width, camera.height)
            near = (
                (u > -margin)
                & (u < camera.width + margin)
                & (v > -margin)
                & (v < camera.height + margin)
            )
        idx = idx[near]
        if len(idx) > cfg.max_points:
            idx = self._rng.choice(idx, cfg.max_points, replace=False)
        idx = idx[~object_mask(xyz[idx], exclude, exclude_margin_m)]
        if len(idx) < max(cfg.min_points, 1):
            return SKIP_FEW_POINTS
        xyz = xyz[idx]
        level = _unit_levels(intensity[idx], cfg.bins)
        if level is None:
            return SKIP_FLAT_INTENSITY
        if ground is not None and cfg.ground_clearance_m > 0:
            height = np.abs(xyz @ ground[:3] + ground[3])
            level = np.where(height <= cfg.ground_clearance_m, level + cfg.bins, level)
        # The centre and one step along each axis, projected in one call: the Jacobian.
        stacked = np.empty((7, len(xyz), 3))
        stacked[0] = cam[idx]
        for axis in range(6):
            c = centre_and_steps[1 + axis]
            stacked[1 + axis] = xyz @ c[:, :3].T + c[:, 3]
        uv0, depth = camera.project(stacked[0])
        seen = camera.in_image(uv0) & (depth > 0.5)
        if seen.sum() < max(cfg.min_points, 1):
            return SKIP_FEW_POINTS
        level, uv0 = level[seen], uv0[seen]
        # The Jacobian of the pinhole projection: the lens distortion changes it by a few per
        # cent at the image's edge, which scales the candidates' offsets there, symmetrically.
        pin = stacked[:, seen] @ camera.k.T
        pin_uv = pin[..., :2] / pin[..., 2:3]
        jac = np.nan_to_num(pin_uv[1:] - pin_uv[0][None])
        # Only the rows the candidates can reach are kept (the lidar sees a band of the image).
        reach = _REACH_STEPS * 3 * float(np.abs(jac[..., 1]).max(initial=0.0))
        row0 = max(int(uv0[:, 1].min() - reach), 0)
        row1 = min(int(uv0[:, 1].max() + reach) + 2, camera.height)
        grey = _grey_unit(image, row0, row1)
        g0 = _bilinear(grey, uv0 - [0.0, row0]) / 255.0
        if float(np.std(g0)) < cfg.min_contrast:
            return SKIP_FLAT_IMAGE
        return FrameEvidence(
            uv=uv0.astype(np.float32),
            jacobian=jac.astype(np.float32),
            level=level,
            grey=grey,
            row0=row0,
            width=camera.width,
            origin=self._centre.copy(),
            fold=self._frames % _FOLDS,
        )

    def _projections(self, vehicle_from_camera: FloatArray) -> FloatArray:
        """camera_from_vehicle (3 x 4) at the centre and one step along each axis (7 x 3 x 4),
        kept until the centre or the extrinsic changes (frames of one rig share them)."""
        key = (vehicle_from_camera.tobytes(), self._centre.tobytes())
        if self._projection_cache is None or self._projection_cache[0] != key:
            out = np.empty((7, 3, 4))
            out[0] = _perturbed(vehicle_from_camera, self._centre).inverse().matrix[:3]
            for axis in range(6):
                v = self._centre.copy()
                v[axis] += self._steps[axis]
                out[1 + axis] = _perturbed(vehicle_from_camera, v).inverse().matrix[:3]
            self._projection_cache = (key, out)
        return self._projection_cache[1]

    def _histograms(
        self, frame: FrameEvidence, candidates: FloatArray | None = None
    ) -> npt.NDArray[np.int32]:
        """The frame's joint histogram (intensity level x grey level, the ground's points among
        the rest: the fits and the decisions do not tell them apart) for each candidate (K x
        bins^2): ``candidates`` K x 6 offsets in steps from the centre, by default the local
        search's."""
        cands = self._offsets if candidates is None else candidates
        bins = self.config.bins
        pooled = frame if self._rows == bins else replace(frame, level=frame.level % bins)
        return histograms(pooled, cands + self._shift(frame), bins)

    def _shift(self, frame: FrameEvidence) -> FloatArray:
        """The centre's offset from the frame's origin, in steps."""
        shift: FloatArray = (self._centre - frame.origin) / self._steps
        return shift

    def _pooled(self) -> PooledEvidence:
        """The window's frames laid end to end around the centre (kept until the window or
        the centre changes): a search scores hundreds of candidates over them."""
        if self._pooled_evidence is None:
            frames = [frame for frame, _ in self._window]
            self._pooled_evidence = PooledEvidence(
                frames, [self._shift(f) for f in frames], self.config.bins, self._rows
            )
        return self._pooled_evidence

    # -- decision --------------------------------------------------------------------------

    def search(self) -> Fit:
        """The local search: fit the window's evidence around the centre; where an axis' peak
        lies off it (beyond the candidates, or more than 1.5 steps away and significant), find
        the best correction jointly in all six axes (Powell's method on the window's MI less
        the prior: the axes are coupled, a yaw much like a sideways shift) from the axes'
        peaks and from the best of them alone, move the centre there and fit again. The last
        fit."""
        fit = self.fit()
        offset = (fit.correction - self._centre) / self._steps
        significant = np.abs(fit.correction - self._centre) > _SIGNIFICANT_SIGMA * fit.sigma
        on_ridge = bool(np.any(fit.ridge))
        if (
            not np.any(fit.beyond)
            and not np.any((np.abs(offset) > 1.5) & significant)
            and not on_ridge
        ):
            return fit
        start = np.clip(offset, -_REACH_STEPS, _REACH_STEPS)
        # Two starts, each with half the budget: the axes' own peaks, and their rotations alone.
        # A pitch is much like a height change (and a yaw like a sideways shift): each axis'
        # own peak explains the same image shift twice, and the search can settle in the
        # valley between the two explanations.
        rotations_only = start.copy()
        rotations_only[3:] = 0.0
        starts = [start, rotations_only]
        if on_ridge:
            # Where a ridge peaks: the axes' own fits cannot walk along it.
            starts.append(fit.ridge)
        found = self._climb(starts, split=False)
        # The axes' peaks, each fitted with the others held, can lead every climb into one
        # wrong basin (a rich world, a 0.5-degree yaw drift: the climbs ended 0.9 degrees of
        # roll, 0.6 of pitch and 10 cm of height off, scoring 0.42 nats where the truth, two
        # steps of yaw from the rig, scored 0.45; later searches walked on to 2.35 degrees).
        # One more climb from the best axis' peak alone, taken where the evidence is sure of
        # it (`_surely_better`): on eight KITTI frames and a 1-degree roll, its end scored
        # higher over all the frames but not without one fold's, and was the worse estimate.
        alone = self._best_alone(start)
        if alone is not None:
            other = self._climb([alone], split=False)
            if self._surely_better(other, found):
                found = other
        self.recentre(self._centre + found * self._steps)
        return self.fit()

    def _best_alone(self, start: FloatArray) -> FloatArray | None:
        """Of ``start``'s axes (steps from the centre), the one whose peak alone scores best
        on the window (its MI less the prior) as a correction of that axis only; None where
        fewer than two axes move (the climbs started from it already)."""
        axes = np.flatnonzero(start)
        if len(axes) < 2:
            return None
        singles = []
        for axis in axes:
            one = np.zeros(6)
            one[axis] = start[axis]
            singles.append(one)
        out: FloatArray = min(singles, key=self._search_cost)
        return out

    def _search_cost(
        self, offset: FloatArray, *, split: bool = False, classes: bool = False
    ) -> float:
        """The search's cost at ``offset`` (steps from the centre): the window's MI
        (`_window_score`'s ``split`` and ``classes``) less the prior toward the rig, negated."""
        at = self._centre / self._steps + offset
        score = self._window_score(offset, split=split, classes=classes)
        return -score + self._prior * float(at @ self._prior_shape @ at)

    def _surely_better(self, candidate: FloatArray, incumbent: FloatArray) -> bool:
        """Whether ``candidate`` (steps from the centre) scores above ``incumbent`` (MI less
        the prior) over the whole window and over the window without each fold of frames in
        turn, as a fit's walk asks every fold to agree."""
        offsets = np.vstack([incumbent, candidate])
        scores, loo_scores = self._fold_scores(
            ((frame.fold, self._histograms(frame, offsets)) for frame, _ in self._window), 2
        )
        at = self._centre / self._steps + offsets
        prior = self._prior * np.einsum("ka,ab,kb->k", at, self._prior_shape, at)
        return all(bool(np.diff(s - prior)[0] > 0) for s in [scores, *loo_scores])

    def _fold_scores(
        self, histograms_by_fold: Iterable[tuple[int, npt.NDArray[np.int32]]], candidates: int
    ) -> tuple[FloatArray, list[FloatArray]]:
        """The MI of each of ``candidates`` over the window's frames (``histograms_by_fold``:
        each frame's fold and its joint histograms, candidates x bins^2), and leaving out each
        fold in turn (a fold without frames leaves the whole window)."""
        bins = self.config.bins
        folds = np.zeros((_FOLDS, candidates, bins * bins), dtype=np.int64)
        for fold, hist in histograms_by_fold:
            folds[fold] += hist
        total = folds.sum(axis=0)
        scores = _mutual_information(total.reshape(-1, bins, bins))
        loo_scores = [
            _mutual_information((total - folds[f]).reshape(-1, bins, bins)) for f in range(_FOLDS)
        ]
        return scores, loo_scores

    def _climb(
        self, starts: Sequence[FloatArray], *, split: bool, classes: bool = False
    ) -> FloatArray:
        """The best correction (steps from the centre) that Powell's method finds from each of
        ``starts``, each with half the budget of window scores, on the window's MI (``split``:
        with the votes split between grey levels; ``classes``: the ground's points apart) less
        the prior, within a trust region of twice the reach (1.25 degrees, 12.5 cm): the MI
        pooled over a few seconds can peak higher far off than at the truth (one rich world,
        12 frames, a 0.5-degree roll drift: 1.5, -2.1, -1.5 degrees with 18 and 21 cm scored
        0.260 nats, exactly projected, against the truth's 0.247). A larger drift is walked to
        over successive fits."""
        limit = 2.0 * _REACH_STEPS

        def cost(x: FloatArray) -> float:
            return self._search_cost(x, split=split, classes=classes)

        # scipy.optimize costs a process 0.4 s to import; only a search needs it.
        from scipy.optimize import minimize  # noqa: PLC0415

        best: Any = None
        for x0 in starts:
            found = minimize(
                cost,
                np.clip(x0, -limit, limit),
                method="Powell",
                bounds=[(-limit, limit)] * 6,
                options={
                    "xtol": 0.05,
                    "ftol": 1e-6,
                    "maxfev": max(self.config.max_evaluations // 2, 1),
                },
            )
            if best is None or float(found.fun) < float(best.fun):
                best = found
        out: FloatArray = np.asarray(best.x, dtype=np.float64)
        return out

    def score_at(self, correction: Correction) -> float:
        """MI of the window's frames pooled at ``correction`` of the extrinsic in force (to
        first order in its distance from the search's centre: exact for translations across
        the optical axis, within 0.3 px for a degree of rotation)."""
        return self._window_score((correction.vector() - self._centre) / self._steps)

    def _window_score(
        self, offset: FloatArray, *, split: bool = False, classes: bool = False
    ) -> float:
        """MI of the window's frames pooled at one candidate: ``offset`` steps from the
        centre; ``split``: each point's vote split between grey levels; ``classes``: the
        ground's points counted apart (else every class's levels summed)."""
        bins = self.config.bins
        joint = self._pooled().histogram(offset, split=split)
        # The classes' blocks of point levels, apart or summed.
        counts = joint.reshape(-1, bins) if classes else joint.reshape(-1, bins, bins).sum(axis=0)
        return float(_mutual_information(counts))

    def fit(self) -> Fit:
        """Fit the window's evidence: per axis, a quadratic through the MI of the centre and
        the axis' four candidates, and its maximum. The axes are fitted one at a time (coupled
        errors, such as a pitch and a height, are resolved by `search` as the centre moves).
        The uncertainty is the jackknife's over the folds of frames (the candidates' scores
        share their points, so the fit's own residuals would understate it)."""
        scores, loo_scores = self._fold_scores(
            ((frame.fold, hist) for frame, hist in self._window), len(self._offsets)
        )
        total_peaks, total_beyond, score, prior = self._fit_axes(scores)
        self._prior = prior
        loo = np.array([self._fit_axes(s, prior)[0] for s in loo_scores])
        sigmas = _fold_spread(loo)
        # Walk only where every fold agrees on the direction.
        agree = np.all(np.sign(loo) == total_beyond, axis=0) & np.all(np.abs(loo) > 1.0, axis=0)
        beyond = np.where(agree, total_beyond, 0.0)
        unsure = (total_beyond != 0) & ~agree
        peaks = np.where(unsure, 0.0, total_peaks)
        sigmas = np.where(unsure, math.inf, sigmas)
        return Fit(
            correction=self._centre + peaks * self._steps,
            sigma=sigmas * self._steps,
            beyond=beyond,
            score=score,
            ridge=self._ridge_peak(scores, loo_scores),
            folds=self._centre + np.where(unsure, 0.0, loo) * self._steps,
        )

    def _set_ridges(self, frame: FrameEvidence) -> None:
        """The ridges' directions from a frame's projection: for each pair of `_RIDGE_PAIRS`,
        the combination of its two axes that moves the frame's pixels least, scaled so that
        its larger part is one step; their candidates join the search's."""
        ridges = []
        for a, b in _RIDGE_PAIRS:
            motion = frame.jacobian[[a, b]].astype(np.float64).reshape(2, -1)
            _, vectors = np.linalg.eigh(motion @ motion.T)
            ridge = np.zeros(6)
            ridge[[a, b]] = vectors[:, 0] / np.abs(vectors[:, 0]).max()
            ridges.append(ridge)
        self._ridges = np.array(ridges)
        along = [k * ridge for ridge in self._ridges for k in _OFFSETS]
        self._offsets = np.concatenate([self._axis_offsets, along])

    def _ridge_peak(self, scores: FloatArray, loo_scores: Sequence[FloatArray]) -> FloatArray:
        """Where the ridges peak (steps from the centre): the quadratic through each ridge's
        candidates, for those whose peak lies within the candidates, more than a step from the
        centre and by `_SIGNIFICANT_SIGMA` of the folds' spread (``scores``: the candidates' MI
        over all frames, ``loo_scores`` leaving out each fold); zeros elsewhere."""
        out = np.zeros(6)
        if not len(self._ridges):
            return out
        n = len(_OFFSETS)
        first = 1 + 6 * n
        x = np.array([0.0, *_OFFSETS])

        def peaks(scores: FloatArray) -> FloatArray:
            found = []
            for r in range(len(self._ridges)):
                along = scores[first + n * r : first + n * (r + 1)]
                a, b = _quadratic(x, np.concatenate([[scores[0]], along]))
                peak = _peak(a, b, 0.0, 0.0)
                found.append(peak if math.isfinite(peak) else math.copysign(np.inf, b))
            return np.array(found)

        total_peaks = peaks(scores)
        loo = np.array([peaks(s) for s in loo_scores])
        for r, ridge in enumerate(self._ridges):
            t = float(total_peaks[r])
            # A ridge rising beyond the candidates is no peak to look at: on little evidence
            # (eight KITTI frames) a ridge's far end is where its bias lies.
            if not math.isfinite(t) or abs(t) > _REACH_STEPS or not np.all(np.isfinite(loo[:, r])):
                continue
            sigma = float(_fold_spread(loo[:, r]))
            if abs(t) > 1.5 and abs(t) > _SIGNIFICANT_SIGMA * sigma:
                out += t * ridge
        return out

    def _fit_axes(
        self, scores: FloatArray, prior: float | None = None
    ) -> tuple[FloatArray, FloatArray, float, float]:
        """Per axis, the peak (steps from the centre, clipped to the reach) of the quadratic
        through its scores less a weak prior toward the rig (``prior``: its curvature, by
        default `PRIOR_FRACTION` of the sharpest axis'), and the direction of a peak beyond
        the reach (else 0); the centre's MI; the prior used. The prior keeps an axis the
        evidence barely constrains (a translation along the optical axis) where the rig has it
        and shrinks a well-observed one by a few per cent. ``scores``: the candidates' MI."""
        x = np.array([0.0, *_OFFSETS])
        n = len(_OFFSETS)
        fits = [
            _quadratic(x, np.concatenate([[scores[0]], scores[1 + n * axis : 1 + n * (axis + 1)]]))
            for axis in range(6)
        ]
        if prior is None:
            prior = PRIOR_FRACTION * max(*(-a for a, _ in fits), 1e-12)
        centre_steps = self._centre / self._steps
        peaks = np.zeros(6)
        beyond = np.zeros(6)
        for axis, (a, b) in enumerate(fits):
            weight = float(self._prior_shape[axis, axis])
            peak = _peak(a, b, prior * weight, float(centre_steps[axis]))
            if math.isfinite(peak) and abs(peak) <= _REACH_STEPS:
                peaks[axis] = peak
            else:
                direction = peak if math.isfinite(peak) else b
                beyond[axis] = math.copysign(1.0, direction) if direction else 0.0
                peaks[axis] = beyond[axis] * _REACH_STEPS
        return peaks, beyond, float(scores[0]), prior

    def recentre(self, centre: npt.ArrayLike) -> None:
        """Centre the search on ``centre`` (six values, rad and m); the window's frames are
        scored again around it."""
        self._centre = np.asarray(centre, dtype=np.float64).reshape(6).copy()
        self._pooled_evidence = None
        self._motion_jacobian = None
        self._window = deque(
            ((frame, self._histograms(frame)) for frame, _ in self._window),
            maxlen=self._window.maxlen,
        )

    def _decide(self, fit: Fit) -> None:
        cfg = self.config
        drifted = self._is_drift(fit)
        if drifted:
            self._beyond += 1
            self._within = 0
        else:
            self._within += 1
            self._beyond = 0
        state = self._estimate.state
        if state != MonitorState.DRIFTED and self._beyond >= cfg.flag_after:
            state = MonitorState.DRIFTED
        elif (state == MonitorState.DRIFTED and self._within >= cfg.clear_after) or (
            state == MonitorState.COLLECTING and not drifted
        ):
            state = MonitorState.ALIGNED
        if state == MonitorState.DRIFTED:
            fit = self.refine(fit)
        self._estimate = self._estimate_of(fit, state)

    def estimate(self) -> CalibrationEstimate:
        """The current belief (``collecting`` until ``min_frames`` frames were used)."""
        return self._estimate

    def verdict(self) -> CalibrationEstimate:
        """One search over the window and its verdict without the hysteresis (for a check of
        a whole recorded source): ``drifted`` when the correction it finds is drift;
        ``collecting`` (no correction) when the window pools less information than
        ``min_information_nats``, or too little above the ground (``min_structure_share``)."""
        information, share, enough = self._information()
        if not enough:
            return CalibrationEstimate(
                MonitorState.COLLECTING,
                frames=self._frames,
                skipped=self._skipped,
                score=information,
                structure_share=share,
            )
        fit = self.search()
        if not self._is_drift(fit):
            return self._estimate_of(fit, MonitorState.ALIGNED)
        return self._estimate_of(self.refine(fit), MonitorState.DRIFTED)

    def refine(self, fit: Fit) -> Fit:
        """A drifted fit with its correction refined: Powell's method from it, jointly in the
        six axes, on the window's MI with each point's vote split between grey levels (see
        `calibration.pooled`) and the ground's points counted apart where the frames came with
        a plane (``ground_clearance_m``), less the prior, within the search's trust region.
        The hard counts' MI, which the fits and the decisions use, is rugged at a fraction of a
        pixel, and the axes' fits cannot walk along a ridge; the split counts' MI is smooth
        enough to climb it. Only the estimate of a drift is refined: deciding on the split
        counts, the true rig's estimate wandered further along the pitch-height ridge and was
        flagged within two minutes of one rich world (benchmarks/RESULTS.md), so they do not
        decide; nor, likewise, do the classes. The uncertainty stays the fit's."""
        if not self._window:
            return fit
        start = (fit.correction - self._centre) / self._steps
        refined = self._centre + self._climb([start], split=True, classes=True) * self._steps
        return replace(fit, correction=refined)

    def _is_drift(self, fit: Fit) -> bool:
        """Whether a fit is drift: an axis beyond the reach, or `is_drift`, or the points'
        motion in the image under the correction beyond ``flag_pixels`` as `is_drift` asks of
        each axis (significantly, and known to better than half the limit)."""
        if np.any(fit.beyond) or is_drift(fit.correction, fit.sigma, self.config):
            return True
        limit = self.config.flag_pixels
        if limit <= 0:
            return False
        moved, spread = self._image_motion(fit)
        return bool(_beyond(moved, spread, limit))

    def _image_motion(self, fit: Fit) -> tuple[float, float]:
        """How far the fit's correction moves the window's points in the image (median, px)
        and the jackknife's spread of that (the folds' corrections about their mean, in the
        image; inf without folds)."""
        if self._motion_of is not None and self._motion_of[0] is fit:
            return self._motion_of[1]
        if len(fit.folds) < 2:
            out = (float(self.image_motion_px(fit.correction)[0]), math.inf)
        else:
            folds = fit.folds - fit.folds.mean(axis=0)
            moved, *apart = self.image_motion_px(np.vstack([fit.correction, folds]))
            n = len(folds)
            out = (float(moved), math.sqrt((n - 1) / n * float(np.sum(np.square(apart)))))
        self._motion_of = (fit, out)
        return out

    def image_motion_px(self, corrections: npt.ArrayLike) -> FloatArray:
        """How far each of ``corrections`` (rows of six values, rad and m, from the extrinsic
        in force) moves the window's points in the image: the median over a share of them (at
        most `_MOTION_POINTS` a frame), px, to first order."""
        steps = np.asarray(corrections, dtype=np.float64).reshape(-1, 6) / self._steps
        if not self._window:
            return np.zeros(len(steps))
        if self._motion_jacobian is None:
            # u then v of every point, each contiguous: 6 x 2M.
            parts = [frame.jacobian[:, :_MOTION_POINTS] for frame, _ in self._window]
            self._motion_jacobian = np.concatenate(
                [np.concatenate([p[..., i] for p in parts], axis=1) for i in (0, 1)], axis=1
            )
        jac = self._motion_jacobian
        m = jac.shape[1] // 2
        # einsum's own loop, not BLAS: six rows, and BLAS' threads contend with the node's.
        moved = np.einsum("ka,am->km", steps.astype(np.float32), jac)
        u, v = moved[:, :m], moved[:, m:]
        out: FloatArray = np.median(np.sqrt(u * u + v * v), axis=1).astype(np.float64)
        return out

    def reported_sigma(self, sigma: FloatArray) -> FloatArray:
        """The uncertainty reported with an estimate (rad and m): a fit's ``sigma`` (the folds'
        spread, which the decision weighs) with the score's systematic error added, inf on the
        vehicle axes a translation along the optical axis shows in."""
        total: FloatArray = np.sqrt(np.square(sigma) + np.square(self._systematic))
        total[3:][self._unobserved] = math.inf
        return total

    def _estimate_of(self, fit: Fit, state: str) -> CalibrationEstimate:
        moved, spread = self._image_motion(fit)
        return CalibrationEstimate(
            state=state,
            correction=Correction.from_vector(fit.correction),
            sigma=sigma_tuple(self.reported_sigma(fit.sigma)),
            frames=self._frames,
            skipped=self._skipped,
            score=fit.score,
            image_motion_px=moved,
            image_motion_sigma_px=spread,
            structure_share=self.structure_share(),
        )


def is_drift(correction: FloatArray, sigma: FloatArray, config: MonitorConfig) -> bool:
    """Whether a correction (six values, rad and m) with its standard deviations is drift: an
    axis beyond its threshold, significantly away from zero, and known to better than half the
    threshold (a scene with little texture gives wide estimates that must not raise a flag)."""
    limits = np.array(
        [math.radians(config.flag_rotation_deg)] * 3 + [config.flag_translation_m] * 3
    )
    return bool(np.any(_beyond(np.abs(correction), sigma, limits)))


def _beyond(size: npt.ArrayLike, sigma: npt.ArrayLike, limit: npt.ArrayLike) -> BoolArray:
    """Whether each ``size`` (>= 0) with its standard deviation ``sigma`` is beyond ``limit``:
    over it, significantly away from zero, and known to better than half of it."""
    size, sigma, limit = np.asarray(size), np.asarray(sigma), np.asarray(limit)
    beyond: BoolArray = (size > limit) & (size > _SIGNIFICANT_SIGMA * sigma) & (sigma < limit / 2)
    return beyond


def sigma_tuple(sigma: FloatArray) -> tuple[float, float, float, float, float, float]:
    """Standard deviations (rad, m) -> degrees for the rotations, metres for the translations."""
    s = [float(math.degrees(v)) for v in sigma[:3]] + [float(v) for v in sigma[3:]]
    return (s[0], s[1], s[2], s[3], s[4], s[5])


def _grey_unit(image: npt.NDArray[np.uint8], row0: int, row1: int) -> npt.NDArray[np.uint8]:
    """Grey level of the image's rows ``row0:row1`` stretched to 0-255 between their 1st and
    99th percentiles, slightly blurred so that sub-pixel moves change it smoothly."""
    pad0, pad1 = max(row0 - 4, 0), min(row1 + 4, image.shape[0])
    band = image[pad0:pad1]
    grey = band if band.ndim == 2 else cv2.cvtColor(band, cv2.COLOR_BGR2GRAY)
    g = cv2.GaussianBlur(grey, (0, 0), 1.0)[row0 - pad0 : row1 - pad0]
    # The percentiles from the histogram of the 256 levels, the stretch as a lookup table.
    cdf = np.cumsum(np.bincount(g[::2, ::2].ravel(), minlength=256))
    lo, hi = (int(np.searchsorted(cdf, q * cdf[-1])) for q in (0.01, 0.99))
    levels = np.arange(256, dtype=np.float64)
    table = np.clip((levels - lo) / max(hi - lo, 1) * 256.0, 0.0, 255.0).astype(np.uint8)
    out = np.asarray(cv2.LUT(np.ascontiguousarray(g), table), dtype=np.uint8)
    return out


def _unit_levels(values: FloatArray, bins: int) -> npt.NDArray[np.int64] | None:
    """Intensities as levels 0..bins-1 between the frame's 1st and 99th percentiles; None
    where those are equal (a lidar that reports no intensity, or one value for nearly every
    point): such a frame's points would all vote at one level, which says nothing of the
    alignment yet reshapes the pooled joint histogram the other frames' evidence is read in."""
    lo, hi = np.percentile(values, [1.0, 99.0])
    if not hi > lo:
        return None
    unit = np.clip((values - lo) / float(hi - lo), 0.0, 0.999999)
    levels: npt.NDArray[np.int64] = (unit * bins).astype(np.int64)
    return levels


def _bilinear(grey: npt.NDArray[np.uint8], uv: FloatArray) -> FloatArray:
    h, w = grey.shape
    u = np.clip(uv[:, 0] - 0.5, 0.0, w - 1.000001)
    v = np.clip(uv[:, 1] - 0.5, 0.0, h - 1.000001)
    u0 = u.astype(np.int64)
    v0 = v.astype(np.int64)
    fu = u - u0
    fv = v - v0
    u1 = np.minimum(u0 + 1, w - 1)
    v1 = np.minimum(v0 + 1, h - 1)

    def at(v: npt.NDArray[np.int64], u: npt.NDArray[np.int64]) -> FloatArray:
        return grey[v, u].astype(np.float64)

    top = at(v0, u0) * (1 - fu) + at(v0, u1) * fu
    bottom = at(v1, u0) * (1 - fu) + at(v1, u1) * fu
    out: FloatArray = np.asarray(top * (1 - fv) + bottom * fv, dtype=np.float64)
    return out
