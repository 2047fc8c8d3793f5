"""The ground under the vehicle: a plane fitted to the low lidar returns of a sweep.

The fusion engine takes the plane as an input (points below it plus a clearance are ground; box
bottoms sit on it, corrected by the lowest returns near each object since one plane drifts on
slopes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.transforms import RigidTransform
from perception.config import GroundConfig

__all__ = ["GroundConfig", "GroundPlane", "estimate_ground"]

#: Point-to-plane distances held at once while the planes are scored (32 MB of float64).
_MAX_DISTANCES = 4_000_000

FloatArray = npt.NDArray[np.float64]


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

    def moved(self, target_from_source: RigidTransform) -> GroundPlane:
        """The same plane in another frame (the plane's frame is the transform's source)."""
        normal = target_from_source.rotation @ np.asarray(self.normal)
        offset = self.offset - float(normal @ target_from_source.translation)
        return GroundPlane((float(normal[0]), float(normal[1]), float(normal[2])), offset)

    def z_at(self, xy: npt.ArrayLike) -> FloatArray:
        """The plane's z at N x 2 BEV positions."""
        q = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        nx, ny, nz = self.normal
        out: FloatArray = -(self.offset + q[:, 0] * nx + q[:, 1] * ny) / nz
        return out


def _checked_points(points: npt.ArrayLike, name: str) -> npt.NDArray[Any]:
    """``points`` as an N x 3+ array of numbers, as they are; ValueError naming ``name``."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"{name}: expected an N x 3 or N x 4 array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {p.dtype}")
    return p


def _as_points(points: npt.ArrayLike, name: str) -> FloatArray:
    return np.asarray(_checked_points(points, name), dtype=np.float64)


def estimate_ground(
    points_vehicle: npt.ArrayLike, config: GroundConfig | None = None
) -> GroundPlane:
    """Fit the ground plane to the low points of a sweep (vehicle frame, N x 4 or N x 3).

    Deterministic RANSAC (generator seeded by ``config.seed``) over the points near the expected
    ground height, refined by least squares on the inliers. Falls back to the level plane at
    ``config.ground_prior_z_m`` when fewer than ``config.ransac_min_inliers`` points support any
    plane. Non-finite points are ignored. Raises ValueError when ``points_vehicle`` is not N x 3+.
    """
    config = config or GroundConfig()
    p = _checked_points(points_vehicle, "points_vehicle")
    fallback = GroundPlane.horizontal(config.ground_prior_z_m)
    z0 = config.ground_prior_z_m
    # The height band first, then the range within it, each compared in float64 (the
    # thresholds are float64 scalars), without a float64 copy of the whole sweep: that copy
    # was most of the fit's time. Non-finite points fail these comparisons and drop out.
    z = p[:, 2]
    with np.errstate(invalid="ignore"):
        in_band = (z >= np.float64(z0 - config.ground_band_below_m)) & (
            z <= np.float64(z0 + config.ground_band_above_m)
        )
    rows = np.flatnonzero(in_band)
    x, y = p[rows, 0].astype(np.float64), p[rows, 1].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        rows = rows[x**2 + y**2 <= config.ground_fit_range_m**2]
    if len(rows) < max(config.ransac_min_inliers, 3):
        return fallback
    if len(rows) > config.ransac_max_points:
        # An even stride over the scan order samples every ring; cheaper than a random choice.
        rows = rows[:: math.ceil(len(rows) / config.ransac_max_points)]
    # Only the sampled rows are gathered (a boolean index of every candidate cost more).
    cand = p[rows, :3].astype(np.float64)
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
    # In place, and a block of planes at a time: M x iterations float64 is 1.5 MB for the
    # defaults, but 2.4 GB for the most iterations the config takes (a MemoryError on every
    # sweep with more candidates kept).
    kept_normals, kept_offsets = normals[ok], offsets[ok]
    counts = np.empty(len(kept_normals), dtype=np.int64)
    block = max(1, _MAX_DISTANCES // len(cand))
    for i in range(0, len(kept_normals), block):
        dist = cand @ kept_normals[i : i + block].T
        dist += kept_offsets[i : i + block]
        np.abs(dist, out=dist)
        counts[i : i + block] = np.count_nonzero(dist < config.ransac_threshold_m, axis=0)
    best = int(np.argmax(counts))
    if counts[best] < config.ransac_min_inliers:
        return fallback
    normal, offset = kept_normals[best], float(kept_offsets[best])
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
