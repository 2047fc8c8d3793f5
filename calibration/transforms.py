"""Rigid transforms named `target_from_source`: `p_target = target_from_source.apply(p_source)`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError

__all__ = ["RigidTransform"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rotation + translation; `matrix` is the 4 x 4 homogeneous form (float64)."""

    matrix: FloatArray

    @staticmethod
    def identity() -> RigidTransform:
        return RigidTransform(np.eye(4))

    @staticmethod
    def from_matrix(
        matrix: npt.ArrayLike, name: str = "transform", tol: float = 1e-4
    ) -> RigidTransform:
        """Build from a 3 x 4 or 4 x 4 matrix, checking the rotation is orthonormal (det +1)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4):
            raise CalibrationError(f"{name}: expected a 3x4 or 4x4 matrix, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise CalibrationError(f"{name}: matrix has non-finite values")
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=tol) or abs(np.linalg.det(r) - 1.0) > tol:
            raise CalibrationError(
                f"{name}: rotation is not orthonormal with det +1 (det={np.linalg.det(r):.6f})"
            )
        if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
            raise CalibrationError(f"{name}: last row must be [0, 0, 0, 1]")
        return RigidTransform(m)

    @property
    def rotation(self) -> FloatArray:
        return self.matrix[:3, :3]

    @property
    def translation(self) -> FloatArray:
        return self.matrix[:3, 3]

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        """`a_from_b @ b_from_c` is `a_from_c`."""
        return RigidTransform(self.matrix @ other.matrix)

    def inverse(self) -> RigidTransform:
        inv = np.eye(4)
        inv[:3, :3] = self.rotation.T
        inv[:3, 3] = -self.rotation.T @ self.translation
        return RigidTransform(inv)

    def apply(self, points: npt.ArrayLike) -> FloatArray:
        """Transform N x 3 points (extra columns are ignored); returns N x 3 float64."""
        p = np.asarray(points, dtype=np.float64)[:, :3]
        out: FloatArray = p @ self.rotation.T + self.translation
        return out
