"""Rigid transforms named `target_from_source`: `p_target = target_from_source.apply(p_source)`.

Units are metres and radians. `a_from_b @ b_from_c` is `a_from_c`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError, shown

__all__ = ["ORTHONORMAL_TOL", "RigidTransform", "check_rotation", "rotation_from_quaternion"]

FloatArray = npt.NDArray[np.float64]

# Calibration files print rotations with about 7 significant digits, so their rotations are
# orthonormal only to ~1e-6; 1e-4 accepts those and still rejects real mistakes (a 0.01 rad
# shear or a reflection).
ORTHONORMAL_TOL = 1e-4
_EYE3 = np.eye(3)


def check_rotation(r: FloatArray, name: str, tol: float = ORTHONORMAL_TOL) -> None:
    """Raise CalibrationError (`"<name>: ..."`) unless `r` is a finite 3 x 3 rotation, det +1."""
    if r.shape != (3, 3):
        raise CalibrationError(f"{name}: rotation must be 3x3, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise CalibrationError(f"{name}: rotation has non-finite values")
    # The 3 x 3 determinant written out: numpy's general one costs ten times more per call, and
    # a rig (a network input too) may hold thousands of frames.
    (a, b, c), (d, e, f), (g, h, i) = r.tolist()
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    err = float(np.abs(r @ r.T - _EYE3).max())
    if err > tol or abs(det - 1.0) > tol:
        raise CalibrationError(
            f"{name}: rotation is not orthonormal with det +1 "
            f"(det={det:.6f}, max |R R^T - I|={err:.2e}, tolerance {tol:g})"
        )


def rotation_from_quaternion(w: float, x: float, y: float, z: float) -> FloatArray:
    """The 3 x 3 rotation of the quaternion (w, x, y, z), normalised first (datasets write
    them to a few digits). Raises ValueError for a non-finite or zero quaternion."""
    q = np.array([w, x, y, z], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion (w, x, y, z) {[w, x, y, z]} is not a rotation")
    w, x, y, z = (float(v) for v in q / norm)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rotation + translation (metres); `matrix` is the 4 x 4 homogeneous form (float64).

    The rotation is kept exactly as given (not re-orthonormalised) so that transforms read from
    files reproduce the files' matrices; `inverse` is therefore the exact affine inverse.
    """

    matrix: FloatArray

    @staticmethod
    def identity() -> RigidTransform:
        return RigidTransform(np.eye(4))

    @staticmethod
    def from_matrix(
        matrix: npt.ArrayLike, name: str = "transform", tol: float = ORTHONORMAL_TOL
    ) -> RigidTransform:
        """Build from a 3 x 4 or 4 x 4 matrix, checking the rotation is orthonormal (det +1).

        Raises CalibrationError naming `name` for a wrong shape, non-finite values, a rotation
        that is not orthonormal with det +1 within `tol`, or a last row other than [0 0 0 1].
        """
        try:
            m = np.array(matrix, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as e:
            raise CalibrationError(
                f"{name}: expected a 3x4 or 4x4 matrix of numbers ({shown(str(e))})"
            ) from e
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4):
            raise CalibrationError(f"{name}: expected a 3x4 or 4x4 matrix, got shape {m.shape}")
        if not np.all(np.isfinite(m)):
            raise CalibrationError(f"{name}: matrix has non-finite values")
        check_rotation(m[:3, :3], name, tol)
        if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=1e-9):
            raise CalibrationError(f"{name}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        return RigidTransform(m)

    @staticmethod
    def from_rotation_translation(
        rotation: npt.ArrayLike, translation: npt.ArrayLike, name: str = "transform"
    ) -> RigidTransform:
        """From a 3 x 3 rotation and a 3-vector translation (metres); validated as `from_matrix`.

        Raises CalibrationError naming `name` (`<name>.translation` for a bad translation).
        """
        try:
            r = np.array(rotation, dtype=np.float64)
            t = np.array(translation, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as e:
            raise CalibrationError(
                f"{name}: rotation/translation must be numbers ({shown(str(e))})"
            ) from e
        if t.shape != (3,):
            raise CalibrationError(f"{name}.translation: expected 3 values, got shape {t.shape}")
        if not np.all(np.isfinite(t)):
            raise CalibrationError(f"{name}.translation: non-finite values")
        check_rotation(r, f"{name}.rotation")
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = t
        return RigidTransform(m)

    @staticmethod
    def from_rotvec(
        rotvec: npt.ArrayLike, translation: npt.ArrayLike = (0, 0, 0)
    ) -> RigidTransform:
        """From an axis-angle vector (radians, Rodrigues) and a translation (metres)."""
        r, _ = cv2.Rodrigues(np.asarray(rotvec, dtype=np.float64).reshape(3, 1))
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = np.asarray(translation, dtype=np.float64)
        return RigidTransform(m)

    @staticmethod
    def from_yaw(
        yaw: float, translation: npt.ArrayLike = (0, 0, 0), pitch: float = 0.0, roll: float = 0.0
    ) -> RigidTransform:
        """Rotation Rz(yaw) Ry(pitch) Rx(roll) (radians, z-y'-x'' Tait-Bryan) + translation."""
        cy, sy = np.cos(yaw), np.sin(yaw)
        cp, sp = np.cos(pitch), np.sin(pitch)
        cr, sr = np.cos(roll), np.sin(roll)
        rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
        m = np.eye(4)
        m[:3, :3] = rz @ ry @ rx
        m[:3, 3] = np.asarray(translation, dtype=np.float64)
        return RigidTransform(m)

    @property
    def rotation(self) -> FloatArray:
        return self.matrix[:3, :3]

    @property
    def translation(self) -> FloatArray:
        return self.matrix[:3, 3]

    @property
    def yaw(self) -> float:
        """Heading of the source x axis in the target x-y plane (radians, counter-clockwise)."""
        return float(np.arctan2(self.matrix[1, 0], self.matrix[0, 0]))

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        """`a_from_b @ b_from_c` is `a_from_c`."""
        return RigidTransform(self.matrix @ other.matrix)

    def inverse(self) -> RigidTransform:
        """`source_from_target`. Exact inverse (not R^T) so file matrices round-trip to 1e-15."""
        inv = np.eye(4)
        r_inv = np.linalg.inv(self.rotation)
        inv[:3, :3] = r_inv
        inv[:3, 3] = -r_inv @ self.translation
        return RigidTransform(inv)

    def apply(self, points: npt.ArrayLike) -> FloatArray:
        """Transform N x 3 points (extra columns are ignored); returns N x 3 float64."""
        p = np.asarray(points, dtype=np.float64)[:, :3]
        out: FloatArray = p @ self.rotation.T + self.translation
        return out

    def apply_rows(self, points: npt.ArrayLike) -> FloatArray:
        """`apply` with the result as rows: 3 x N (x, y, z, each contiguous), the same values.
        Work along the coordinates of many points (divisions, masks) runs over contiguous
        memory then, several times faster than over the columns of an N x 3 array; `.T` gives
        the N x 3 view."""
        p = np.asarray(points, dtype=np.float64)[:, :3]
        rows: FloatArray = self.rotation @ p.T
        rows += self.translation[:, None]
        return rows

    def almost_equal(self, other: RigidTransform, atol: float = 1e-9) -> bool:
        return bool(np.allclose(self.matrix, other.matrix, rtol=0.0, atol=atol))
