"""Camera models: pinhole with plumb-bob (Brown-Conrady) distortion."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError

__all__ = ["PinholeCamera"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """Intrinsics `k` (3 x 3), plumb-bob distortion (k1, k2, p1, p2[, k3]) and image size (px)."""

    k: FloatArray
    distortion: tuple[float, ...]
    width: int
    height: int

    def __post_init__(self) -> None:
        k = np.asarray(self.k, dtype=np.float64)
        if k.shape != (3, 3) or not np.all(np.isfinite(k)):
            raise CalibrationError(
                f"camera intrinsics: expected a finite 3x3 matrix, got {k.shape}"
            )
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CalibrationError(
                f"camera intrinsics: focal lengths must be positive, got {k[0, 0]}, {k[1, 1]}"
            )
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(
                f"camera image size must be positive, got {self.width}x{self.height}"
            )

    @property
    def has_distortion(self) -> bool:
        return any(abs(c) > 0.0 for c in self.distortion)

    def project(self, points_cam: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Project N x 3 points in the camera frame (z forward) to pixels.

        Returns (uv N x 2, depth N). Points with depth <= 0 get NaN pixels.
        """
        p = np.asarray(points_cam, dtype=np.float64)[:, :3]
        depth = p[:, 2].copy()
        uv = np.full((p.shape[0], 2), np.nan)
        front = depth > 1e-6
        if np.any(front):
            if self.has_distortion:
                pts, _ = cv2.projectPoints(
                    p[front].reshape(-1, 1, 3),
                    np.zeros(3),
                    np.zeros(3),
                    self.k,
                    np.asarray(self.distortion, dtype=np.float64),
                )
                uv[front] = pts.reshape(-1, 2)
            else:
                q = p[front] @ self.k.T
                uv[front] = q[:, :2] / q[:, 2:3]
        return uv, depth

    def in_image(self, uv: FloatArray) -> npt.NDArray[np.bool_]:
        """Mask of pixels inside the image (NaN pixels are outside)."""
        with np.errstate(invalid="ignore"):
            return (
                (uv[:, 0] >= 0)
                & (uv[:, 0] < self.width)
                & (uv[:, 1] >= 0)
                & (uv[:, 1] < self.height)
            )
